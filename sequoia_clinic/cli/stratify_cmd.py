"""``sequoia-clinic stratify TABLE``: Kaplan-Meier curves and tests of a cohort split into risk groups.

Parses the options, calls :func:`sequoia_clinic.survival.stratify.stratify_table` and prints a summary.
Groups come from ``--group-col``, from a continuous ``--risk-col`` (cut by ``--cutoffs`` or a quantile
split, exploratory), or from ``--model`` (the model's frozen cut-offs applied to its linear predictor,
computed from the table's gene columns or read from ``--risk-col``). The stage writes into ``--out DIR``:
km.png, km.pdf (curves with 95% CIs and an at-risk table), km_curves.csv, at_risk.csv,
stratify_figures.csv (every number) and stratify.json; all or nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import TimeUnit, TimeUnitOpt

# The survival stage (sksurv, lifelines, pandas, matplotlib) is imported inside the command, not here,
# so `sequoia-clinic --help` and the other commands start fast.
if TYPE_CHECKING:
    from sequoia_clinic.survival.stratify import StratifyOutcome

TableArg = Annotated[Path, typer.Argument(help="Cohort table (CSV or Parquet): one row per patient.")]
TimeColOpt = Annotated[str, typer.Option("--time-col", help="Follow-up time column.")]
EventColOpt = Annotated[
    str, typer.Option("--event-col", help="Event column: 1/true = event, 0/false = censored.")
]
StratifyOutOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]


def summary_lines(outcome: StratifyOutcome, out: Path) -> list[str]:
    result = outcome.result
    lines = [
        f"wrote {out}/ ({', '.join(p.name for p in outcome.files)})",
        f"cohort: n={result.n}, events={result.events}; {result.grouping}",
    ]
    for curve in result.curves:
        lines.append(f"  {curve.label}: n={curve.n}, events={curve.events}")
    if result.logrank:
        lines.append(f"log-rank p = {result.logrank.p_value:.3g} ({result.logrank.degrees_of_freedom} df)")
    for hr in result.hazard_ratios:
        if hr.hazard_ratio is None or hr.lower is None or hr.upper is None:
            lines.append(f"HR {hr.group} vs {hr.reference}: {hr.note}")
            continue
        lines.append(
            f"HR {hr.group} vs {hr.reference}: {hr.hazard_ratio:.2f} (95% CI {hr.lower:.2f}-{hr.upper:.2f})"
        )
    lines.append(f"C-index ({result.c_index.of}): {result.c_index.harrell_c:.3f}")
    lines += [f"note: {note}" for note in result.notes]
    return lines


def register(app: typer.Typer) -> None:
    @app.command("stratify")
    @user_errors
    def stratify_cmd(
        table: TableArg,
        time_col: TimeColOpt,
        event_col: EventColOpt,
        out: StratifyOutOpt,
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
        time_unit: TimeUnitOpt = TimeUnit.YEARS,
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
    ) -> None:
        """Kaplan-Meier by risk group with log-rank tests, hazard ratios and the C-index."""
        from sequoia_clinic.survival.cutoffs import parse_cutoff_spec, parse_names
        from sequoia_clinic.survival.stratify import StratifyRequest, stratify_table

        given = cutoffs or groups or group_names
        request = StratifyRequest(
            table=table,
            out_dir=out,
            time_col=time_col,
            event_col=event_col,
            time_unit=time_unit.value,
            risk_col=risk_col,
            group_col=group_col,
            model=model,
            cutoffs=parse_cutoff_spec(cutoffs, groups, "lp", group_names) if given else None,
            group_order=parse_names(group_order),
            endpoint=endpoint,
        )
        outcome = stratify_table(request)
        typer.echo("\n".join(summary_lines(outcome, out)))
