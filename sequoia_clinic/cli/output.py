"""What the commands show: consoles, progress displays and the score summary (shared by score and demo).

Progress and stage lines go to stderr, results to stdout. ``--quiet`` is handled here only: it is a
display concern, so no library code sees it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console

# rich.progress is light; the pipeline (torch, ...) is only named for type checking.
from sequoia_clinic.progress import make_progress

if TYPE_CHECKING:
    from rich.progress import Progress

    from sequoia_clinic.pipeline.score import ScoreOutcome

StageCallback = Callable[[str], None]


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """stdout console; when piped (no terminal width) tables get room instead of rich's 80 columns."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


@contextmanager
def progress_bar(quiet: bool) -> Iterator[Progress | None]:
    """A progress bar on stderr while the block runs (None with ``--quiet`` or when stderr is no terminal:
    a bar in a log or a pipe is noise, and would put a blank line before an ``error:`` line)."""
    progress = make_progress(quiet or not sys.stderr.isatty(), stderr_console())
    if progress is None:
        yield None
        return
    with progress:
        yield progress


@contextmanager
def stage_display(quiet: bool) -> Iterator[tuple[Progress | None, StageCallback]]:
    """Progress bars and '›' stage lines on a terminal; plain 'stage:' lines for logs; nothing if quiet."""
    console = stderr_console()
    interactive = not quiet and sys.stderr.isatty()

    def on_stage(name: str) -> None:
        if not quiet:
            console.print(f"[bold]›[/bold] {name}" if interactive else f"stage: {name}")

    progress = make_progress(not interactive, console)
    if progress is None:
        yield None, on_stage
        return
    with progress:
        yield progress, on_stage


def print_score_outcome(outcome: ScoreOutcome, quiet: bool) -> None:
    """A short summary on stdout: group, score, absolute risks, files (no patient identifiers)."""
    out = Console(highlight=False)
    data = outcome.report
    risk = data.risk
    if not quiet:
        if data.demo:
            out.print("[bold red]DEMONSTRATION — NOT FOR CLINICAL USE (untrained demo model)[/bold red]")
        out.print(f"risk group  {risk.group_names[risk.group_index]} (score {risk.score:.0f} of 100)")
        for horizon in risk.absolute_risks:
            ci = f" (95% CI {horizon.lower:.1%}–{horizon.upper:.1%})" if horizon.lower is not None else ""
            out.print(f"risk {horizon.horizon:g} y   {horizon.risk:.1%}{ci}")
        out.print(f"tiles       {data.qc.tiles_used} used of {data.qc.tiles_kept} kept")
        for warning in data.qc.warnings:
            out.print(f"[yellow]QC warning: {warning.message}[/yellow]")
    for path in outcome.files:
        out.print(f"wrote       {path}")
