"""The cohort result store on disk: the single source of truth of a cohort run, whatever engine ran it.

Layout of the output folder::

    plan.json                              what is computed (manifest rows, key context)
    results/<k[:2]>/<k>.json               the committed result of key k (a SlideResult); first writer wins
    results/<k[:2]>/<k>.<attempt>/         that attempt's files: result.json, expression.npy, report.pdf ...
    attempts/<host>-<pid>.jsonl            append-only ledger, one file per writer process
    attempts/.<attempt>.child.pkl          a slide process's report to its parent, deleted once read
    tracebacks/<attempt>.txt               traceback of an unexpected error
    logs/<host>-<pid>.log                  output of that writer's isolated slide processes

Commit protocol: an attempt writes its files into its own folder, then writes the record to a temporary
file, fsyncs it and publishes it with ``os.link`` to ``<k>.json``, which fails if the name exists. The
first writer wins; a later duplicate (a retried or doubly executed slide) finds the name taken, deletes
its own folder and is harmless. Nothing else marks a slide done: no lock files, no partial files.
Executions are at least once; the table, built from the records, has every row exactly once.
Ledger lines are written with one ``write`` on an ``O_APPEND`` file per process, so writers never share a
file (safe on NFS); a line cut by a killed writer is skipped when reading.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sequoia_clinic.fileio import write_json_atomic
from sequoia_clinic.pipeline.cohort_plan import RESULT_FORMAT, Plan


class AttemptStatus(StrEnum):
    """How one attempt ended."""

    COMMITTED = "committed"  # scored and published by this attempt
    DUPLICATE = "duplicate"  # scored, but another attempt had published the same key first
    ALREADY_DONE = "already-done"  # the key was committed before this attempt started: nothing computed
    FAILED = "failed"  # an error in the slide (one-line reason) or its process died
    TIMEOUT = "timeout"  # killed after --slide-timeout

    @property
    def ok(self) -> bool:
        return self in (AttemptStatus.COMMITTED, AttemptStatus.DUPLICATE, AttemptStatus.ALREADY_DONE)

    @property
    def computed(self) -> bool:
        return self in (AttemptStatus.COMMITTED, AttemptStatus.DUPLICATE)


@dataclass(frozen=True)
class HorizonValue:
    years: float
    risk: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class SlideResult:
    """The committed record of one result key (``results/<k[:2]>/<k>.json``); no patient identifiers."""

    key: str
    slide_sha256: str
    attempt_id: str
    files: str  # the attempt's folder name beside the record
    created: str
    linear_predictor: float
    risk_score: float
    risk_group: str
    risk_group_index: int
    horizons: tuple[HorizonValue, ...]
    signature_genes: tuple[tuple[str, float], ...]
    qc_codes: tuple[str, ...]
    qc_messages: tuple[str, ...]
    tiles_kept: int
    tiles_used: int
    tissue_fraction: float
    mpp: float
    mpp_source: str
    slide_format: str
    width_px: int
    height_px: int
    bundle_trained: bool
    precision: str
    device: str
    cache_hit: bool
    timings: tuple[tuple[str, float], ...]
    format: str = RESULT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlideResult:
        return cls(
            **{
                **data,
                "horizons": tuple(HorizonValue(**h) for h in data["horizons"]),
                "signature_genes": tuple((str(g), float(v)) for g, v in data["signature_genes"]),
                "qc_codes": tuple(data["qc_codes"]),
                "qc_messages": tuple(data["qc_messages"]),
                "timings": tuple((str(k), float(v)) for k, v in data["timings"]),
            }
        )


@dataclass(frozen=True)
class AttemptEntry:
    """One ledger line: an attempt's start, or its end with the outcome."""

    event: str  # "start" or "end"
    attempt_id: str
    slide_id: str
    slide: str
    stat: str  # stat fingerprint of the slide when the attempt started
    host: str
    pid: int
    time: float  # seconds since the epoch
    status: AttemptStatus | None = None  # end only
    key: str | None = None
    slide_sha256: str | None = None
    error_class: str | None = None
    message: str | None = None
    traceback: str | None = None  # file under tracebacks/
    seconds: float | None = None
    peak_rss_mb: float | None = None
    timings: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = None if self.status is None else self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptEntry:
        return cls(
            **{
                **data,
                "status": None if data["status"] is None else AttemptStatus(data["status"]),
                "timings": tuple((str(k), float(v)) for k, v in data["timings"]),
            }
        )


def writer_name() -> str:
    """``<host>-<pid>``: one ledger file per writing process."""
    return f"{socket.gethostname()}-{os.getpid()}"


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class CohortStore:
    """Paths and operations of one output folder (see the module docstring)."""

    root: Path

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def attempts_dir(self) -> Path:
        return self.root / "attempts"

    @property
    def tracebacks_dir(self) -> Path:
        return self.root / "tracebacks"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def create(self) -> None:
        for folder in (self.results_dir, self.attempts_dir, self.tracebacks_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)

    # ---- plan --------------------------------------------------------------------------------------
    def read_plan(self) -> Plan | None:
        if not self.plan_path.exists():
            return None
        return Plan.from_dict(json.loads(self.plan_path.read_text(encoding="utf-8")))

    def write_plan(self, plan: Plan) -> None:
        write_json_atomic(self.plan_path, plan.to_dict())

    # ---- results -----------------------------------------------------------------------------------
    def record_path(self, key: str) -> Path:
        return self.results_dir / key[:2] / f"{key}.json"

    def files_dir(self, key: str, attempt_id: str) -> Path:
        return self.results_dir / key[:2] / f"{key}.{attempt_id}"

    def is_committed(self, key: str) -> bool:
        return self.record_path(key).exists()

    def read_result(self, key: str) -> SlideResult | None:
        path = self.record_path(key)
        try:
            return SlideResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def commit(self, result: SlideResult) -> bool:
        """Publish ``result`` create-exclusively; True if this call published it, False if it existed."""
        final = self.record_path(result.key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{result.key}.{uuid.uuid4().hex}.tmp"
        data = (json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n").encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, final)
            won = True
        except FileExistsError:
            won = False
        finally:
            tmp.unlink()
        _fsync_dir(final.parent)
        return won

    # ---- ledger ------------------------------------------------------------------------------------
    def ledger_path(self, writer: str) -> Path:
        return self.attempts_dir / f"{writer}.jsonl"

    def append(self, writer: str, entry: AttemptEntry) -> None:
        """Append one line to the writer's ledger with a single ``write`` (O_APPEND)."""
        line = (json.dumps(entry.to_dict(), separators=(",", ":"), allow_nan=False) + "\n").encode()
        self.attempts_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.ledger_path(writer), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def read_ledger(self) -> list[AttemptEntry]:
        """Every readable ledger line of every writer, ordered by time (cut lines skipped)."""
        entries: list[AttemptEntry] = []
        if not self.attempts_dir.exists():
            return entries
        for path in sorted(self.attempts_dir.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entries.append(AttemptEntry.from_dict(json.loads(line)))
                except (ValueError, TypeError, KeyError):
                    continue  # a line cut by a killed writer
        return sorted(entries, key=lambda e: e.time)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
