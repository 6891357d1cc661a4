"""Per-slide isolation, parent side: every slide runs in its own child process, forked from a warm helper.

Importing the scoring stack (torch, timm, ...) takes seconds, so a fresh interpreter per slide would cost
more than a small slide's work. Each executing process (the in-process loop, or each Dask worker) starts
one helper, ``python -m sequoia_clinic.pipeline.cohort_worker`` (the "zygote"), which imports the stack
once, warms it up on the packaged demo slide, and then forks one child per slide (:mod:`.cohort_worker`).
The child

* runs in its own process group, so a timeout kills everything it started;
* dies with the helper (``PR_SET_PDEATHSIG`` on Linux), and the helper dies with this process (it exits
  and kills its child when the request pipe closes), so an orphan never keeps scoring;
* hashes the slide, scores it, writes its files and commits its result (:mod:`.cohort_store`), then writes
  a small report file for the parent.

A native crash, an out-of-memory kill or a hang therefore fails that one slide: the helper survives and
this process records the attempt. :class:`SlideExecutor` adds the attempt ledger: a ``start`` line before
the child runs and an ``end`` line with the outcome after it. Nothing here imports torch.

The helper is started with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it: slides run beside
other workers and the tile-reading threads, and on a busy 2-core machine OpenMP threads spinning at
barriers made the tile encoder 3-5x slower (measured: 1,620 tiles in 20-32 s spinning, 5-6 s passive).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from sequoia_clinic.pipeline.cohort_plan import KeyContext, stat_fingerprint
from sequoia_clinic.pipeline.cohort_store import (
    AttemptEntry,
    AttemptStatus,
    CohortStore,
    new_attempt_id,
    writer_name,
)
from sequoia_clinic.settings import Settings

WORKER_MODULE = "sequoia_clinic.pipeline.cohort_worker"
HANDLED_FAILURE_EXIT = 3  # the child caught the error and reported it
HELPER_START_TIMEOUT_S = 600.0  # importing the scoring stack on a cold, busy node


@dataclass(frozen=True)
class SlideJob:
    """One slide to score: the manifest row's facts and the run's key context (no bytes: paths only)."""

    slide_id: str
    slide: Path
    patient_id: str
    mpp: float | None
    context: KeyContext
    known_sha256: str | None = None  # from the ledger, valid while the stat fingerprint is unchanged
    known_stat: str = ""


@dataclass(frozen=True)
class WorkerConfig:
    """What every executing process needs, the same for all slides of a run."""

    store: Path
    settings: Settings
    slide_timeout_s: float
    threads: int | None = None  # torch threads per slide; None = torch's default


@dataclass(frozen=True)
class ChildRequest:
    """Sent to the helper: run one slide in a forked child."""

    job: SlideJob
    config: WorkerConfig
    attempt_id: str
    report_path: Path


@dataclass(frozen=True)
class WarmUpRequest:
    """Sent to the helper once, before its first slide: warm the scoring stack up (no slide is scored)."""

    job: SlideJob
    config: WorkerConfig


@dataclass(frozen=True)
class ChildExit:
    """The helper's answer: how the child ended."""

    returncode: int  # negative: killed by that signal
    timed_out: bool
    seconds: float


@dataclass(frozen=True)
class ChildReport:
    """What the child writes for its parent before exiting (pickled to ``ChildRequest.report_path``)."""

    status: AttemptStatus
    key: str | None = None
    slide_sha256: str | None = None
    error_class: str | None = None
    message: str | None = None
    traceback: str | None = None
    peak_rss_mb: float | None = None
    timings: tuple[tuple[str, float], ...] = field(default_factory=tuple)


class IsolationError(RuntimeError):
    """The helper process could not be started or died (infrastructure, not the slide)."""


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class SlideRunner:
    """The helper ("zygote") of one process: start it, run slides in it, close it."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None
        self._ready = False

    def start(self) -> None:
        """Spawn the helper (it imports the scoring stack in the background; :meth:`run` waits for it)."""
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        environment = dict(os.environ)
        environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see the module docstring
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, str(request_r), str(reply_w)],
                pass_fds=(request_r, reply_w),
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        os.close(request_r)
        os.close(reply_w)
        self._requests = Connection(request_w, readable=False)
        self._replies = Connection(reply_r, writable=False)
        self._ready = False

    def _receive(self, timeout: float | None) -> object:
        assert self._replies is not None and self._process is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._replies.poll(1.0):
            if self._process.poll() is not None:
                raise IsolationError(
                    f"the slide helper exited (code {self._process.returncode}); see {self.log_path}"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise IsolationError(
                    f"the slide helper did not start within {timeout:g} s; see {self.log_path}"
                )
        try:
            return self._replies.recv()
        except (EOFError, OSError) as exc:
            raise IsolationError(f"the slide helper died; see {self.log_path}") from exc

    def _send(self, message: object) -> None:
        assert self._requests is not None
        try:
            self._requests.send(message)
        except OSError as exc:
            raise IsolationError(f"the slide helper died; see {self.log_path}") from exc

    def prepare(self, job: SlideJob, config: WorkerConfig) -> None:
        """(Re)start the helper if needed and wait until it has imported and warmed up the stack."""
        if self._process is None or self._process.poll() is not None:
            self.close()
            self.start()
        if not self._ready:
            self._receive(HELPER_START_TIMEOUT_S)  # the helper's "ready" (its pid)
            self._send(WarmUpRequest(job, config))
            self._receive(HELPER_START_TIMEOUT_S)
            self._ready = True

    def run(self, request: ChildRequest) -> ChildExit:
        """Run one slide in a forked child of the (prepared) helper."""
        self.prepare(request.job, request.config)
        self._send(request)
        reply = self._receive(None)
        if not isinstance(reply, ChildExit):
            raise IsolationError(f"unexpected reply from the slide helper: {type(reply).__name__}")
        return reply

    def close(self) -> None:
        """Close the pipe (the helper then exits, killing a running child) and reap the helper."""
        for connection in (self._requests, self._replies):
            if connection is not None:
                connection.close()
        self._requests = self._replies = None
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


class SlideExecutor:
    """Runs slide jobs in isolation and keeps this process's attempt ledger; one per executing process."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.store = CohortStore(config.store)
        self.writer = writer_name()
        self.runner = SlideRunner(self.store.logs_dir / f"{self.writer}.log")

    def start(self) -> None:
        self.runner.start()

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> SlideExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, job: SlideJob) -> AttemptEntry:
        """One attempt: ledger ``start``, the isolated child, ledger ``end``; returns the ``end`` entry."""
        attempt_id = new_attempt_id()
        try:  # helper start-up and warm-up are not the slide's time (nor its attempt)
            self.runner.prepare(job, self.config)
        except IsolationError:
            pass  # retried by run() below, where a failure is recorded as this attempt's
        start = AttemptEntry(
            event="start",
            attempt_id=attempt_id,
            slide_id=job.slide_id,
            slide=str(job.slide),
            stat=stat_fingerprint(job.slide),
            host=self.writer.rsplit("-", 1)[0],
            pid=os.getpid(),
            time=time.time(),
        )
        self.store.append(self.writer, start)
        report_path = self.store.attempts_dir / f".{attempt_id}.child.pkl"  # read and deleted below
        request = ChildRequest(job, self.config, attempt_id, report_path)
        seconds: float | None = None
        try:
            exit_info = self.runner.run(request)
            report = self._read_report(report_path, exit_info)
            seconds = round(exit_info.seconds, 3)
        except IsolationError as exc:  # the helper itself died: this attempt fails, the next one restarts it
            report = ChildReport(
                AttemptStatus.FAILED, error_class="IsolationError", message=one_line(str(exc))
            )
        end = AttemptEntry(
            event="end",
            attempt_id=attempt_id,
            slide_id=job.slide_id,
            slide=start.slide,
            stat=start.stat,
            host=start.host,
            pid=start.pid,
            time=time.time(),
            status=report.status,
            key=report.key,
            slide_sha256=report.slide_sha256,
            error_class=report.error_class,
            message=report.message,
            traceback=report.traceback,
            seconds=seconds,
            peak_rss_mb=report.peak_rss_mb,
            timings=report.timings,
        )
        self.store.append(self.writer, end)
        return end

    def _read_report(self, path: Path, exit_info: ChildExit) -> ChildReport:
        report = None
        if path.exists():
            with open(path, "rb") as handle:
                report = pickle.load(handle)
            path.unlink()
        if exit_info.timed_out:
            return ChildReport(
                AttemptStatus.TIMEOUT,
                error_class="SlideTimeout",
                message=f"no result after --slide-timeout {self.config.slide_timeout_s:g} s; its processes were killed",
            )
        if isinstance(report, ChildReport) and exit_info.returncode in (0, HANDLED_FAILURE_EXIT):
            return report
        code = exit_info.returncode
        reason = (
            f"the slide's process was killed by {_signal_name(-code)} (a native crash or an out-of-memory kill)"
            if code < 0
            else f"the slide's process exited with code {code} without a result"
        )
        return ChildReport(AttemptStatus.FAILED, error_class="ProcessDied", message=reason)
