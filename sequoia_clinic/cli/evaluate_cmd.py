"""``sequoia-clinic evaluate --predictions P --expression E --out DIR``: which genes are predicted well.

Parses the options, calls :func:`sequoia_clinic.pipeline.evaluate.evaluate_predictions` and prints the
summary. ``--rule`` picks the headline rule (both rules are always computed); ``--unit patient`` (default)
averages the slides of a patient, ``--unit slide`` counts each slide as the reference does. With
``--bundle``, the evaluation of the bundle's own out-of-fold predictions is stored in it. Exit codes: 0
success, 2 user-caused error (one line, nothing written), 1 internal error.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import CacheDirOpt, ModelsDirOpt, TransformChoice, build_settings
from sequoia_clinic.cli.output import stdout_console


class UnitChoice(StrEnum):  # = sequoia_clinic.evaluation.Unit
    PATIENT = "patient"
    SLIDE = "slide"


class RuleChoice(StrEnum):  # = sequoia_clinic.evaluation.Rule
    STRICT = "strict"
    SEQUOIA = "sequoia"


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    @user_errors
    def evaluate(
        predictions: Path = typer.Option(
            ...,
            "--predictions",
            help="Predictions (oof.parquet of train, or any patient_id/slide_id × genes table).",
        ),
        expression: Path = typer.Option(..., "--expression", help="Measured expression (as for train)."),
        out: Path = typer.Option(..., "--out", help="Output folder."),
        bundle: str | None = typer.Option(
            None, "--bundle", help="The bundle that made the predictions (its evaluation is stored in it)."
        ),
        transform: TransformChoice | None = typer.Option(
            None, "--expression-transform", help="Transform of the measured table (default: the bundle's)."
        ),
        unit: UnitChoice = typer.Option(UnitChoice.PATIENT, "--unit", help="Unit of analysis."),
        rule: RuleChoice = typer.Option(RuleChoice.STRICT, "--rule", help="Headline 'well predicted' rule."),
        baseline: Path | None = typer.Option(
            None,
            "--baseline",
            help="Untrained-model predictions (default: baseline_untrained.parquet beside).",
        ),
        mean_baseline: Path | None = typer.Option(
            None,
            "--mean-baseline",
            help="Training-mean predictions (default: baseline_train_mean.parquet beside).",
        ),
        cache_dir: CacheDirOpt = None,
        models_dir: ModelsDirOpt = None,
    ) -> None:
        """Per-gene Pearson r, RMSE, baselines, Steiger test, BH q and the well-predicted rules."""
        from sequoia_clinic.pipeline.evaluate import (
            EvaluateRequest,
            Rule,
            Transform,
            Unit,
            evaluate_predictions,
        )

        settings = build_settings(cache_dir=cache_dir, models_dir=models_dir)
        request = EvaluateRequest(
            predictions=predictions,
            expression=expression,
            out=out,
            bundle=bundle,
            transform=None if transform is None else Transform(transform.value),
            unit=Unit(unit.value),
            rule=Rule(rule.value),
            baseline=baseline,
            mean_baseline=mean_baseline,
        )
        outcome = evaluate_predictions(request, settings)
        console = stdout_console()
        summary = outcome.evaluation.summary
        protocol = summary.protocol
        console.print(
            f"units       {protocol.n_units} {protocol.unit}s ({protocol.n_patients} patients, "
            f"{protocol.n_slides} slides), {protocol.n_genes:,} genes"
        )
        for name, count in summary.passing.items():
            text = "not evaluated (no untrained baseline)" if count is None else f"{count:,} genes"
            console.print(f"{name:<11} {text}{'  (headline)' if name == protocol.headline_rule else ''}")
        console.print(f"median r    {summary.median_r:.3f} (top 1,000 genes: {summary.top_median_r:.3f})")
        if outcome.stored_in is not None:
            console.print(f"stored      in bundle {outcome.stored_in}")
        elif bundle is not None:
            console.print(f"not stored  in the bundle: {outcome.not_stored_because}")
        console.print(f"wrote       {outcome.out}")
