"""``sequoia-clinic cohort run|status|table``: score a manifest of slides, resumably, and tabulate them.

Parses the options, calls one function of :mod:`sequoia_clinic.pipeline.cohort` and prints its summary.
``run`` shows a live bar (slides done / failed / running, slides per minute, ETA) on a terminal and
nothing when stderr is not one (or with ``--quiet``); notes (plan changes, skipped slides, the Dask
dashboard) go to stderr. Exit codes: 0 every slide of this run's part is ok, 3 some failed or timed out
(after every table is written), 2 user error (one line, nothing written), 1 internal error.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import (
    DEFAULT_BUNDLE,
    App,
    BundleOpt,
    CacheDirOpt,
    Device,
    DeviceOpt,
    EncoderWeightsOpt,
    MaxTilesOpt,
    ModelsDirOpt,
    NoCacheOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    TimeUnit,
    build_settings,
)
from sequoia_clinic.cli.output import stderr_console
from sequoia_clinic.pipeline.cohort_choices import ExecutorKind, ReportsMode

# The pipeline (torch, dask, pandas) is imported inside the commands, not here, so the CLI starts fast.
if TYPE_CHECKING:
    from sequoia_clinic.pipeline.cohort import CohortProgress, InfoCallback, ProgressCallback
    from sequoia_clinic.pipeline.cohort_summary import CohortSummary

cohort_app = App(
    help="Score a cohort of slides (resumable; local or Dask) and tabulate it.", no_args_is_help=True
)

MAX_PRINTED_FAILURES = 20
DirArg = Annotated[Path, typer.Argument(metavar="DIR", help="The --out folder of a `cohort run`.")]


def _no_progress(snapshot: CohortProgress) -> None:
    """Progress is not shown (not a terminal, or --quiet)."""


@contextmanager
def _progress_display(quiet: bool) -> Iterator[tuple[ProgressCallback, InfoCallback]]:
    """(on_progress, on_info) callbacks: a rich bar on a terminal; silent progress otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = stderr_console()

    def on_info(line: str) -> None:
        if not quiet:
            console.print(f"note: {line}", highlight=False)

    if quiet or not sys.stderr.isatty():
        yield _no_progress, on_info
        return
    bar = Progress(
        TextColumn("slides"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]} · running {task.fields[running]} · {task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
    )
    task = bar.add_task("slides", total=None, failed=0, running=0, rate="- slides/min")

    def on_progress(snapshot: CohortProgress) -> None:
        minutes = max(time.monotonic() - snapshot.started, 1e-6) / 60.0
        rate = f"{snapshot.done / minutes:.1f} slides/min" if snapshot.done else "- slides/min"
        bar.update(
            task,
            total=snapshot.total,
            completed=snapshot.done,
            failed=snapshot.failed,
            running=snapshot.running,
            rate=rate,
        )

    with bar:
        yield on_progress, on_info


def summary_lines(summary: CohortSummary, out: Path) -> list[str]:
    lines = [f"cohort: {summary.n} slides; " + ", ".join(f"{status} {n}" for status, n in summary.counts)]
    if summary.demo:
        lines.append("DEMONSTRATION — NOT FOR CLINICAL USE (untrained demo bundle)")
    for failure in summary.failures[:MAX_PRINTED_FAILURES]:
        lines.append(f"  {failure.status}: {failure.slide_id}: {failure.reason} ({failure.error_class})")
    if len(summary.failures) > MAX_PRINTED_FAILURES:
        lines.append(f"  ... {len(summary.failures) - MAX_PRINTED_FAILURES} more in {out}/cohort.csv")
    survival = summary.survival
    if survival is not None:
        result = survival.result
        p = f"log-rank p = {result.logrank.p_value:.3g}" if result.logrank else "one risk group"
        ci = (
            f" (95% CI {survival.c_index_lower:.3f}-{survival.c_index_upper:.3f})"
            if survival.c_index_lower is not None and survival.c_index_upper is not None
            else ""
        )
        lines.append(
            f"survival: n={result.n}, events={result.events}; {p}; C-index {result.c_index.harrell_c:.3f}{ci}"
        )
    elif summary.survival_note:
        lines.append(f"survival: {summary.survival_note}")
    lines.append(
        f"wrote {out}/ (cohort.parquet, cohort.csv, expression.parquet, summary.json, cohort_summary.pdf"
        + (", survival/" if survival is not None else "")
        + ", slides/)"
    )
    return lines


@cohort_app.command("run")
@user_errors
def run_command(
    manifest: Annotated[
        Path,
        typer.Argument(
            metavar="MANIFEST",
            help="CSV/Parquet: slide, patient_id [, slide_id, mpp, time, event, clinical columns].",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (reused to resume).")],
    bundle: BundleOpt = DEFAULT_BUNDLE,
    risk_model: Annotated[
        Path | None,
        typer.Option(
            "--risk-model", exists=True, dir_okay=False, help="Risk model JSON (default: the shipped one)."
        ),
    ] = None,
    executor: Annotated[
        ExecutorKind, typer.Option("--executor", help="local (this machine) or dask (an existing scheduler).")
    ] = ExecutorKind.LOCAL,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="Local slides at once (1: in this process; more: a LocalCluster)."
        ),
    ] = 1,
    scheduler_address: Annotated[
        str | None, typer.Option("--scheduler-address", help="Dask scheduler, e.g. tcp://host:8786.")
    ] = None,
    scheduler_file: Annotated[
        Path | None, typer.Option("--scheduler-file", help="Dask scheduler JSON file.")
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option("--shard", help="i/N: score only the i-th of N parts (e.g. a SLURM array task)."),
    ] = None,
    reports: Annotated[
        ReportsMode,
        typer.Option("--reports", help="Per-slide files: none (result.json), pdf, all (+ DICOM)."),
    ] = ReportsMode.NONE,
    slide_timeout: Annotated[
        float,
        typer.Option("--slide-timeout", min=0.001, help="Seconds before a slide's processes are killed."),
    ] = 3600.0,
    max_attempts: Annotated[
        int,
        typer.Option(
            "--max-attempts", min=1, help="Failed attempts (across runs) before a slide is skipped."
        ),
    ] = 3,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also retry slides that failed --max-attempts times.")
    ] = False,
    time_unit: Annotated[
        TimeUnit | None, typer.Option("--time-unit", help="Unit of the manifest's time column.")
    ] = None,
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="Name of the event for labels, e.g. 'distant metastasis'.")
    ] = "event",
    device: DeviceOpt = Device.CPU,
    precision: PrecisionOpt = Precision.AUTO,
    max_tiles: MaxTilesOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    models_dir: ModelsDirOpt = None,
    encoder_weights: EncoderWeightsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Score every slide of MANIFEST into --out; re-running resumes (nothing committed is recomputed)."""
    from sequoia_clinic.pipeline.cohort import CohortRequest, run_cohort
    from sequoia_clinic.pipeline.cohort_engines import EngineSpec
    from sequoia_clinic.pipeline.cohort_plan import Shard

    settings = build_settings(
        device=device,
        precision=precision,
        max_tiles=max_tiles,
        cache_dir=cache_dir,
        no_cache=no_cache,
        models_dir=models_dir,
        encoder_weights=encoder_weights,
    )
    request = CohortRequest(
        manifest=manifest,
        out_dir=out,
        bundle=bundle,
        risk_model=risk_model,
        engine=EngineSpec(executor, workers, scheduler_address, scheduler_file),
        shard=Shard.parse(shard),
        reports=reports,
        slide_timeout_s=slide_timeout,
        max_attempts=max_attempts,
        retry_failed=retry_failed,
        time_unit=time_unit,
        endpoint=endpoint,
    )
    with _progress_display(quiet) as (on_progress, on_info):
        outcome = run_cohort(request, settings, on_progress, on_info)
    lines = summary_lines(outcome.summary, out)
    lines.insert(
        1,
        f"this run: {outcome.dispatched} slides dispatched, {outcome.computed} scored, {outcome.seconds:.1f} s",
    )
    typer.echo("\n".join(lines))
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


@cohort_app.command("status")
@user_errors
def status_command(out: DirArg) -> None:
    """Counts by status, and every failure with its one-line reason (reads the folder, writes nothing)."""
    from sequoia_clinic.pipeline.cohort import cohort_status

    status = cohort_status(out)
    lines = [f"cohort: {status.n} slides; " + ", ".join(f"{s} {n}" for s, n in status.counts)]
    lines.append(
        f"attempts: {status.attempts} recorded, {status.in_flight} without an end (running, or their worker died)"
    )
    for state in status.failures:
        lines.append(
            f"  {state.status.value}: {state.row.slide_id}: {state.reason} ({state.error_class}; "
            f"{state.failed_attempts} failed attempt(s))"
        )
    typer.echo("\n".join(lines))


@cohort_app.command("table")
@user_errors
def table_command(out: DirArg) -> None:
    """Rebuild the tables, survival figures and summary from what is committed (e.g. after --shard runs)."""
    from sequoia_clinic.pipeline.cohort import rebuild_tables

    summary, _ = rebuild_tables(out)
    typer.echo("\n".join(summary_lines(summary, out)))


def register(app: typer.Typer) -> None:
    app.add_typer(cohort_app, name="cohort")
