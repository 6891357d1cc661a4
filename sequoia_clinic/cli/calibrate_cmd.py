"""``sequoia-clinic calibrate TABLE``: fit a Cox risk model of a signature's genes on a cohort table.

Writes the risk-model JSON (``--out``) and, beside it, a one-page model card: ``<stem>.card.png``,
``<stem>.card.pdf`` and ``<stem>.card.md``. Everything is computed first and written last, each file
atomically, so a bad input leaves nothing behind. Prints one summary line per headline figure.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.errors import OptionError
from sequoia_clinic.fileio import atomic_path
from sequoia_clinic.settings import Settings

# The survival and signature modules (sksurv, lifelines, pandas, matplotlib) are imported inside the
# functions that use them, not here, so `sequoia-clinic --help` and the other commands start fast.
if TYPE_CHECKING:
    from sequoia_clinic.survival import CutoffSpec, RiskModel


def parse_floats(text: str | None, option: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OptionError(
            f"{option} '{text}' is not a comma-separated list of numbers", fix=f"Pass e.g. {option} 0.2,0.5."
        ) from None


def parse_names(text: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip()) if text else ()


def cutoff_spec(cutoffs: str | None, groups: str | None, scale: str, names: str | None) -> CutoffSpec:
    """--cutoffs (user, on --cutoff-scale) or --groups (quantile split); tertiles when neither is given."""
    from sequoia_clinic.survival import CutoffSpec

    if cutoffs and groups:
        raise OptionError("--cutoffs and --groups are exclusive", fix="Pass one of them.")
    group_names = parse_names(names) or None
    if cutoffs:
        return CutoffSpec("user", parse_floats(cutoffs, "--cutoffs"), scale, group_names)
    return CutoffSpec(groups or "tertiles", (), "lp", group_names)


def require(value: str | None, option: str, example: str) -> str:
    if not value:
        raise OptionError(f"missing {option}", fix=f"Pass {option} {example}.")
    return value


def card_paths(out: Path) -> dict[str, Path]:
    stem = out.with_suffix("")
    return {fmt: stem.with_name(f"{stem.name}.card.{fmt}") for fmt in ("png", "pdf", "md")}


def write_model_and_card(model: RiskModel, out: Path, card: bool = True) -> list[Path]:
    """Render everything in memory, then write each file atomically (all or nothing on error)."""
    from sequoia_clinic.survival.card import card_figure, card_markdown
    from sequoia_clinic.survival.model import jsonable

    payload = (json.dumps(jsonable(model.to_dict()), indent=2, allow_nan=False) + "\n").encode()
    files: dict[Path, bytes] = {out: payload}
    if card:
        paths = card_paths(out)
        figure = card_figure(model)
        files[paths["png"]] = figure["png"]
        files[paths["pdf"]] = figure["pdf"]
        files[paths["md"]] = card_markdown(model, paths["png"].name).encode()
    with contextlib.ExitStack() as stack:
        for target, data in files.items():
            stack.enter_context(atomic_path(target)).write_bytes(data)
    return list(files)


def summary_lines(model: RiskModel, written: list[Path]) -> list[str]:
    metrics = model.performance.get("metrics", {})
    lines = [f"wrote {p}" for p in written]
    training = model.training
    lines.append(
        f"cohort: n={training.get('n')}, events={training.get('events')}, "
        f"median follow-up {training.get('median_follow_up_years', 0):.1f} years"
    )
    for key in ("harrell_c", "uno_c", "auc_5y", "auc_10y", "ibs", "calibration_slope_10y"):
        m = metrics.get(key)
        if m and m.get("mean") is not None:
            ci = f" (95% CI {m['ci_lower']:.3f}-{m['ci_upper']:.3f})" if m.get("ci_lower") is not None else ""
            lines.append(
                f"cross-validated {key}: {m['mean']:.3f}{ci}, range over repeats "
                f"{m['min_over_repeats']:.3f}-{m['max_over_repeats']:.3f}"
            )
    return lines


EXPRESSION_SOURCES = ("predicted", "measured", "unknown")


def check_expression_source(value: str) -> str:
    if value not in EXPRESSION_SOURCES:
        raise OptionError(
            f"--expression-source {value!r} is not one of {', '.join(EXPRESSION_SOURCES)}",
            fix="Use predicted for tables made with `sequoia-clinic predict`.",
        )
    return value


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    @user_errors
    def calibrate(
        table: Path = typer.Argument(..., help="Cohort table (CSV or Parquet): one row per patient."),
        signature: str | None = typer.Option(
            None, "--signature", help="Registry name (wang76, oncotype21, ...) or a CSV file gene[,weight]."
        ),
        time_col: str | None = typer.Option(None, "--time-col", help="Follow-up time column."),
        event_col: str | None = typer.Option(
            None, "--event-col", help="Event column: 1/true = event, 0/false = censored."
        ),
        time_unit: str | None = typer.Option(
            None, "--time-unit", help="Unit of the time column: days, months or years."
        ),
        covariates: str | None = typer.Option(
            None, "--covariates", help="Numeric clinical covariates, comma-separated (unpenalised)."
        ),
        cutoffs: str | None = typer.Option(
            None, "--cutoffs", help="Pre-specified cut-offs, comma-separated, on --cutoff-scale."
        ),
        cutoff_scale: str = typer.Option(
            "lp", "--cutoff-scale", help="Scale of --cutoffs: lp, score (0-100), risk5 or risk10."
        ),
        groups: str | None = typer.Option(
            None, "--groups", help="Data-driven split fixed at calibration: tertiles, median, quartiles."
        ),
        group_names: str | None = typer.Option(
            None, "--group-names", help="Names of the groups, lowest risk first."
        ),
        endpoint: str = typer.Option(
            "event", "--endpoint", help="Name of the event for labels, e.g. 'distant metastasis'."
        ),
        cohort_name: str | None = typer.Option(
            None, "--cohort-name", help="Name of the cohort for the model card."
        ),
        expression_source: str = typer.Option(
            "unknown",
            "--expression-source",
            help="Where the expression came from: predicted (by `predict`, required for `score` without a "
            "warning), measured (an RNA assay) or unknown.",
        ),
        cv_repeats: int | None = typer.Option(
            None, "--cv-repeats", min=1, help="Repeated CV with different fold seeds."
        ),
        bootstrap: int | None = typer.Option(
            None, "--bootstrap", min=10, help="Bootstrap resamples (CIs and refits)."
        ),
        seed: int | None = typer.Option(None, "--seed", help="Seed for folds and bootstrap."),
        penalty: float | None = typer.Option(
            None, "--penalty", min=0.0, help="Fix the Coxnet alpha (0 = unpenalised) instead of CV."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Risk-model JSON to write (model card written beside it)."
        ),
        card: bool = typer.Option(
            True, "--card/--no-card", help="Also write the model card (PNG, PDF, Markdown)."
        ),
    ) -> None:
        """Fit a penalised Cox risk model with cross-validated performance and a model card."""
        from sequoia_clinic.signatures import get_signature
        from sequoia_clinic.survival import fit_risk_model
        from sequoia_clinic.survival.cohort import UNITS_PER_YEAR, read_table

        unit = require(time_unit, "--time-unit", "days|months|years")
        if unit not in UNITS_PER_YEAR:
            raise OptionError(
                f"--time-unit '{unit}' is not days, months or years",
                fix="Pass --time-unit days, months or years.",
            )
        target = Path(require(str(out) if out else None, "--out", "risk_model.json"))
        if target.suffix.lower() != ".json" or target.is_dir():
            raise OptionError(
                f"--out {target} must be a .json file name", fix="Pass e.g. --out risk_model.json."
            )
        spec = cutoff_spec(cutoffs, groups, cutoff_scale, group_names)
        sig = get_signature(require(signature, "--signature", "wang76 (or a CSV file)"))
        risk = Settings().risk
        overrides = {
            k: v
            for k, v in {"cv_repeats": cv_repeats, "seed": seed, "penalty": penalty}.items()
            if v is not None
        }
        if bootstrap is not None:
            overrides |= {"n_bootstrap_metrics": bootstrap, "n_bootstrap_fit": bootstrap}
        risk = replace(risk, **overrides) if overrides else risk
        frame = read_table(table)
        model = fit_risk_model(
            frame,
            sig,
            time_col=require(time_col, "--time-col", "COLUMN"),
            event_col=require(event_col, "--event-col", "COLUMN"),
            time_unit=unit,
            covariates=parse_names(covariates),
            cutoffs=spec,
            settings=risk,
            endpoint=endpoint,
            cohort_name=cohort_name or table.name,
            path=table,
            expression_source=check_expression_source(expression_source),
        )
        written = write_model_and_card(model, target, card)
        typer.echo("\n".join(summary_lines(model, written)))
        for warning in model.fit_warnings:
            typer.echo(f"warning: {warning}", err=True)
