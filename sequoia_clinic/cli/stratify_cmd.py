"""``sequoia-clinic stratify TABLE``: Kaplan-Meier curves and tests of a cohort split into risk groups.

Groups come from ``--group-col``, from a continuous ``--risk-col`` (cut by ``--cutoffs`` or a quantile
split, exploratory), or from ``--model`` (the model's frozen cut-offs applied to its linear predictor,
computed from the table's gene columns or read from ``--risk-col``). Writes into ``--out DIR``:
km.png, km.pdf (curves with 95% CIs and an at-risk table), km_curves.csv, at_risk.csv,
stratify_figures.csv (every number) and stratify.json; all or nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sequoia_clinic.cli.calibrate_cmd import cutoff_spec, parse_names, require
from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.errors import OptionError

if TYPE_CHECKING:
    from sequoia_clinic.survival.stratify import StratifyResult


def summary_lines(result: StratifyResult, out: Path) -> list[str]:
    lines = [
        f"wrote {out}/ (km.png, km.pdf, km_curves.csv, at_risk.csv, stratify_figures.csv, stratify.json)",
        f"cohort: n={result.n}, events={result.events}; {result.grouping}",
    ]
    for curve in result.curves:
        lines.append(f"  {curve['label']}: n={curve['n']}, events={curve['events']}")
    if result.logrank:
        lines.append(
            f"log-rank p = {result.logrank['p_value']:.3g} ({result.logrank['degrees_of_freedom']} df)"
        )
    for hr in result.hazard_ratios:
        if hr["hazard_ratio"] is None:
            lines.append(f"HR {hr['group']} vs {hr['reference']}: {hr['note']}")
            continue
        lines.append(
            f"HR {hr['group']} vs {hr['reference']}: {hr['hazard_ratio']:.2f} (95% CI {hr['lower']:.2f}-{hr['upper']:.2f})"
        )
    lines.append(f"C-index ({result.c_index['of']}): {result.c_index['harrell_c']:.3f}")
    lines += [f"note: {note}" for note in result.notes]
    return lines


def register(app: typer.Typer) -> None:
    @app.command("stratify")
    @user_errors
    def stratify_cmd(
        table: Path = typer.Argument(..., help="Cohort table (CSV or Parquet): one row per patient."),
        risk_col: str | None = typer.Option(
            None,
            "--risk-col",
            help="Continuous risk score column (higher = worse). With --model it must hold the model's "
            "linear predictor (not the 0-100 score: a 0-100 column spanning over 10x the model's training "
            "linear-predictor range is refused). With --model and no --risk-col, the linear predictor is "
            "computed from the table's gene columns.",
        ),
        group_col: str | None = typer.Option(None, "--group-col", help="Risk-group column."),
        model: Path | None = typer.Option(
            None, "--model", help="Risk model JSON: group by its frozen cut-offs."
        ),
        time_col: str | None = typer.Option(None, "--time-col", help="Follow-up time column."),
        event_col: str | None = typer.Option(
            None, "--event-col", help="Event column: 1/true = event, 0/false = censored."
        ),
        time_unit: str = typer.Option(
            "years", "--time-unit", help="Unit of the time column: days, months or years."
        ),
        cutoffs: str | None = typer.Option(
            None, "--cutoffs", help="Cut-offs on the --risk-col scale, comma-separated."
        ),
        groups: str | None = typer.Option(
            None, "--groups", help="Split of --risk-col: tertiles (default), median, quartiles."
        ),
        group_names: str | None = typer.Option(
            None, "--group-names", help="Names of the groups, lowest risk first."
        ),
        group_order: str | None = typer.Option(
            None, "--group-order", help="Order of --group-col values, lowest risk first."
        ),
        endpoint: str = typer.Option(
            "event", "--endpoint", help="Name of the event for labels, e.g. 'distant metastasis'."
        ),
        out: Path | None = typer.Option(None, "--out", help="Output folder."),
    ) -> None:
        """Kaplan-Meier by risk group with log-rank tests, hazard ratios and the C-index."""
        # Imported here, not at module level (sksurv, lifelines, matplotlib), so the CLI starts fast.
        from sequoia_clinic.survival import RiskModel
        from sequoia_clinic.survival.cohort import UNITS_PER_YEAR, read_table
        from sequoia_clinic.survival.stratify import stratify, write_outputs

        if time_unit not in UNITS_PER_YEAR:
            raise OptionError(
                f"--time-unit '{time_unit}' is not days, months or years", fix="Pass days, months or years."
            )
        target = Path(require(str(out) if out else None, "--out", "DIR"))
        if target.exists() and not target.is_dir():
            raise OptionError(f"--out {target} exists and is not a folder", fix="Pass a folder path.")
        spec = cutoff_spec(cutoffs, groups, "lp", group_names) if (cutoffs or groups or group_names) else None
        if model is not None and spec is not None:
            raise OptionError(
                "--model has frozen cut-offs; --cutoffs/--groups/--group-names do not apply", fix="Drop them."
            )
        risk_model = RiskModel.load(model) if model is not None else None
        frame = read_table(table)
        result = stratify(
            frame,
            time_col=require(time_col, "--time-col", "COLUMN"),
            event_col=require(event_col, "--event-col", "COLUMN"),
            time_unit=time_unit,
            risk_col=risk_col,
            group_col=group_col,
            model=risk_model,
            cutoffs=spec,
            group_order=parse_names(group_order) or None,
            endpoint=endpoint,
            path=table,
        )
        write_outputs(result, target)
        typer.echo("\n".join(summary_lines(result, target)))
