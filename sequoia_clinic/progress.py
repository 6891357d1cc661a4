"""Progress reporting for long stages (tile encoding), decoupled from any one display.

The CLI makes the display (:func:`make_progress`); the stages report through :func:`reporter`.

Callers may pass ``None`` (silent), a ``rich.progress.Progress`` (a bar per stage, with tiles/s), or any
callable ``(stage, done, total) -> None``. :func:`reporter` turns each into a :class:`Reporter`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

ProgressCallback = Callable[[str, int, int], None]
ProgressLike = Progress | ProgressCallback | None


class RateColumn(ProgressColumn):
    """'123.4 tiles/s' from rich's own speed estimate."""

    def __init__(self, unit: str = "tiles") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


def make_progress(quiet: bool, console: Console | None = None) -> Progress | None:
    """A rich progress display on stderr with a tiles/s column, or None when ``quiet``."""
    if quiet:
        return None
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


@dataclass
class Reporter:
    """Stage-wise progress: ``start(stage, total)``, ``advance(n)``, ``finish()``."""

    target: ProgressLike = None
    _task: Any = None
    _stage: str = ""
    _done: int = 0
    _total: int = 0

    def start(self, stage: str, total: int) -> None:
        self._stage, self._done, self._total = stage, 0, total
        if isinstance(self.target, Progress):
            self._task = self.target.add_task(stage, total=total)
        elif callable(self.target):
            self.target(stage, 0, total)

    def advance(self, n: int) -> None:
        self._done += n
        if isinstance(self.target, Progress):
            self.target.update(self._task, advance=n)
        elif callable(self.target):
            self.target(self._stage, self._done, self._total)

    def finish(self) -> None:
        if isinstance(self.target, Progress) and self._task is not None:
            self.target.update(self._task, completed=self._total)
            self.target.stop_task(self._task)


def reporter(progress: ProgressLike) -> Reporter:
    """The :class:`Reporter` for ``progress`` (itself when it already is one)."""
    return progress if isinstance(progress, Reporter) else Reporter(progress)
