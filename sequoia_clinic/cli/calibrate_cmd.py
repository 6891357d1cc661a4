"""``sequoia-clinic calibrate TABLE``: fit a Cox risk model of a signature's genes on a cohort table.

Parses the options, calls :func:`sequoia_clinic.survival.calibrate.calibrate` and prints one summary line
per headline figure. The stage writes the risk-model JSON (``--out``) and, beside it, a one-page model
card (``<stem>.card.png``, ``.card.pdf``, ``.card.md``); a bad input leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import SignatureOpt, TimeUnitOpt, build_settings
from sequoia_clinic.clinical_choices import MissingRule
from sequoia_clinic.errors import OptionError
from sequoia_clinic.settings import RiskSettings

# The survival stage (sksurv, lifelines, pandas, matplotlib) is imported inside the command, not here,
# so `sequoia-clinic --help` and the other commands start fast.
if TYPE_CHECKING:
    from sequoia_clinic.survival.calibrate import CalibrateOutcome

TableArg = Annotated[Path, typer.Argument(help="Cohort table (CSV or Parquet): one row per patient.")]
TimeColOpt = Annotated[str, typer.Option("--time-col", help="Follow-up time column.")]
EventColOpt = Annotated[
    str, typer.Option("--event-col", help="Event column: 1/true = event, 0/false = censored.")
]
ModelOutOpt = Annotated[
    Path, typer.Option("--out", help="Risk-model JSON to write (model card written beside it).")
]
MissingOpt = Annotated[
    MissingRule,
    typer.Option(
        "--missing",
        help="Missing clinical values: refuse (an error naming the column) or impute (median level or value, "
        "modal category of the cohort; the count is recorded in the model and its card).",
    ),
]
HEADLINE_METRICS = ("harrell_c", "uno_c", "auc_5y", "auc_10y", "ibs", "calibration_slope_10y")


def risk_settings(
    cv_repeats: int | None, bootstrap: int | None, seed: int | None, penalty: float | None
) -> RiskSettings:
    """The default risk settings with the options given (None: keep the default)."""
    base = RiskSettings()
    return replace(
        base,
        cv_repeats=base.cv_repeats if cv_repeats is None else cv_repeats,
        n_bootstrap_metrics=base.n_bootstrap_metrics if bootstrap is None else bootstrap,
        n_bootstrap_fit=base.n_bootstrap_fit if bootstrap is None else bootstrap,
        seed=base.seed if seed is None else seed,
        penalty=base.penalty if penalty is None else penalty,
    )


def summary_lines(outcome: CalibrateOutcome) -> list[str]:
    model = outcome.model
    training = model.training
    follow_up = training.median_follow_up_years
    lines = [f"wrote {p}" for p in outcome.files]
    lines.append(
        f"cohort: n={training.n}, events={training.events}, median follow-up "
        + (f"{follow_up:.1f} years" if follow_up is not None else "not reached")
    )
    for key in HEADLINE_METRICS:
        m = model.performance.metric(key)
        if m is None or m.mean is None:
            continue
        ci = (
            f" (95% CI {m.ci_lower:.3f}-{m.ci_upper:.3f})"
            if m.ci_lower is not None and m.ci_upper is not None
            else ""
        )
        spread = (
            f", range over repeats {m.min_over_repeats:.3f}-{m.max_over_repeats:.3f}"
            if m.min_over_repeats is not None and m.max_over_repeats is not None
            else ""
        )
        lines.append(f"cross-validated {key}: {m.mean:.3f}{ci}{spread}")
    return lines


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    @user_errors
    def calibrate(
        table: TableArg,
        signature: SignatureOpt,
        time_col: TimeColOpt,
        event_col: EventColOpt,
        time_unit: TimeUnitOpt,
        out: ModelOutOpt,
        covariates: str | None = typer.Option(
            None,
            "--covariates",
            help="Clinical covariates (unpenalised), comma-separated NAME[:KIND[:REFERENCE]], KIND continuous, "
            "ordinal or categorical; age, size_cm, grade (ordinal 1-3), er, her2 (categorical, reference "
            "negative), nodes and menopause are typed by name, e.g. age,size_cm,grade,er.",
        ),
        missing: MissingOpt = MissingRule.REFUSE,
        population: Path | None = typer.Option(
            None,
            "--population",
            exists=True,
            dir_okay=False,
            help="JSON of the model's intended population and development data (keys: er, her2, menopause, "
            "max_nodes, age_min, age_max, specimen_types, treatment, eligibility, data_source, accrual, "
            "follow_up_end); `score` checks patients against it.",
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
        training_splits: Path | None = typer.Option(
            None,
            "--training-splits",
            exists=True,
            dir_okay=False,
            help="The bundle's splits.json (from `train`): rows of its training patients must be out-of-fold "
            "predictions (a 'fold' column whose test set holds them); in-sample predictions are refused.",
        ),
        measured: Path | None = typer.Option(
            None,
            "--measured",
            exists=True,
            dir_okay=False,
            help="Measured expression of the same patients: the prediction shrinkage (SD predicted / measured) "
            "is recorded in the model and its card.",
        ),
        id_col: str = typer.Option(
            "patient_id",
            "--id-col",
            help="Patient column matching the table with --training-splits / --measured.",
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
        card: bool = typer.Option(
            True, "--card/--no-card", help="Also write the model card (PNG, PDF, Markdown)."
        ),
        reliable_genes_only: bool = typer.Option(
            False,
            "--reliable-genes-only",
            help="Keep only the signature genes that --bundle's stored evaluation finds reliably predicted "
            "(strict rule: cross-validated r >= 0.3, BH q < 0.05).",
        ),
        bundle: str | None = typer.Option(
            None, "--bundle", help="The bundle whose evaluation --reliable-genes-only uses."
        ),
        subgroup: list[str] | None = typer.Option(
            None,
            "--subgroup",
            metavar="SPEC",
            help="Report out-of-fold Harrell's C (bootstrap 95% CI) per level of a subgroup (TRIPOD+AI item 14); "
            "repeatable: COLUMN for a categorical column, COLUMN:CUT or COLUMN:CUT/CUT/... for numeric bands, "
            "e.g. age:50 (age < 50, age >= 50) or er.",
        ),
    ) -> None:
        """Fit a penalised Cox risk model with cross-validated performance and a model card."""
        from sequoia_clinic.survival.calibrate import CalibrateRequest, calibrate
        from sequoia_clinic.survival.cutoffs import parse_cutoff_spec, parse_names
        from sequoia_clinic.survival.records import ExpressionSource
        from sequoia_clinic.survival.subgroups import parse_subgroups

        settings = build_settings(risk=risk_settings(cv_repeats, bootstrap, seed, penalty))
        reliable = None
        if reliable_genes_only or bundle is not None:
            from sequoia_clinic.pipeline.evaluate import reliable_genes

            if not (reliable_genes_only and bundle is not None):
                raise OptionError(
                    "--reliable-genes-only and --bundle go together", fix="Pass both, or neither."
                )
            reliable = reliable_genes(bundle, settings)
        request = CalibrateRequest(
            table=table,
            signature=signature,
            time_col=time_col,
            event_col=event_col,
            time_unit=time_unit.value,
            out=out,
            covariates=parse_names(covariates),
            cutoffs=parse_cutoff_spec(cutoffs, groups, cutoff_scale, group_names),
            endpoint=endpoint,
            cohort_name=cohort_name,
            expression_source=ExpressionSource.parse(expression_source),
            card=card,
            missing=missing,
            population=population,
            training_splits=training_splits,
            measured=measured,
            id_col=id_col,
            reliable_genes=None if reliable is None else reliable.genes,
            reliable_source="" if reliable is None else reliable.source,
            subgroups=parse_subgroups(subgroup or ()),
        )
        outcome = calibrate(request, settings)
        typer.echo("\n".join(summary_lines(outcome)))
        for warning in outcome.model.fit_warnings:
            typer.echo(f"warning: {warning}", err=True)
