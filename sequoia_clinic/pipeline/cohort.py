"""cohort: score every slide of a manifest, resumably, on one machine or a Dask cluster, then tabulate.

The flow behind ``sequoia-clinic cohort run|status|table``, pure functions of (request, settings):

    cohort_manifest (read and check every row; all problems in one error, nothing started)
    → plan (bundle and risk model loaded once here: their hashes and the output-affecting settings make
      the key context; stored as plan.json, changes since the last run named)
    → the rows still to do (not committed under the current key; failed fewer than max_attempts times
      unless retry_failed; this --shard's part)
    → cohort_engines (in-process, LocalCluster or an existing scheduler) → cohort_isolation /
      cohort_worker (one child process per slide, result committed exactly once in cohort_store)
    → cohort_table (tables rebuilt from the store) → cohort_summary (counts, QC, KM stratification)

The store on disk is the single source of truth: running the same command again computes nothing that is
committed, a killed run loses only the slides in flight, and shards or engines can be mixed freely.
Exit code (:attr:`CohortOutcome.exit_code`): 0 when every row of this run's part is ``ok``, 3 otherwise
(after every table is written); user errors raise a SequoiaError (exit 2) before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sequoia_clinic.errors import OptionError, RiskModelError, TableError
from sequoia_clinic.fileio import check_output_dir, sha256_file
from sequoia_clinic.pipeline.cohort_choices import ExecutorKind, ReportsMode
from sequoia_clinic.pipeline.cohort_engines import EngineInfo, EngineSpec, local_threads, run_jobs
from sequoia_clinic.pipeline.cohort_isolation import SlideJob, WorkerConfig
from sequoia_clinic.pipeline.cohort_manifest import Manifest, read_manifest
from sequoia_clinic.pipeline.cohort_plan import (
    KeyContext,
    Plan,
    Shard,
    canonical_json,
    key_settings,
    plan_changes,
)
from sequoia_clinic.pipeline.cohort_store import AttemptEntry, AttemptStatus, CohortStore
from sequoia_clinic.pipeline.cohort_summary import CohortSummary, summarise
from sequoia_clinic.pipeline.cohort_table import (
    RESERVED_COLUMNS,
    RowState,
    RowStatus,
    row_states,
    write_tables,
)
from sequoia_clinic.pipeline.predict import DEFAULT_BUNDLE
from sequoia_clinic.settings import Settings
from sequoia_clinic.units import TimeUnit

DEFAULT_SLIDE_TIMEOUT_S = 3600.0
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class CohortRequest:
    """One ``cohort run``: the manifest, the output folder, the models and how to execute."""

    manifest: Path
    out_dir: Path
    bundle: str | Path = DEFAULT_BUNDLE
    risk_model: Path | None = None  # None: the shipped default
    engine: EngineSpec = field(default_factory=EngineSpec)
    shard: Shard = field(default_factory=Shard)
    reports: ReportsMode = ReportsMode.NONE
    slide_timeout_s: float = DEFAULT_SLIDE_TIMEOUT_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_failed: bool = False
    time_unit: TimeUnit | None = None  # required when the manifest has outcome columns
    endpoint: str = "event"


@dataclass(frozen=True)
class CohortProgress:
    """A live count for a progress display."""

    total: int  # slides dispatched in this run
    done: int
    failed: int
    running: int
    started: float  # time.monotonic() when dispatching began


@dataclass(frozen=True)
class CohortOutcome:
    """What a run did and where the results are."""

    out_dir: Path
    summary: CohortSummary
    part: tuple[RowState, ...]  # the rows of this run's shard, as they stand at the end
    dispatched: int  # slides sent to the engine in this run
    computed: int  # of those, scored by this run (the others were committed meanwhile, or failed)
    skipped_quarantined: tuple[str, ...]  # slide_ids not retried: failed max_attempts times
    plan_changes: tuple[str, ...]
    files: tuple[Path, ...]
    seconds: float

    @property
    def exit_code(self) -> int:
        return 0 if all(s.status == RowStatus.OK for s in self.part) else 3


ProgressCallback = Callable[[CohortProgress], None]
InfoCallback = Callable[[str], None]


def _check_request(request: CohortRequest) -> None:
    request.engine.check()
    if request.max_attempts < 1:
        raise OptionError("must be at least 1", option="max_attempts")
    if request.slide_timeout_s <= 0:
        raise OptionError("must be a positive number of seconds", option="slide_timeout")


def make_plan(manifest: Manifest, request: CohortRequest, settings: Settings) -> Plan:
    """Load the bundle and risk model once, check they fit, and fix the key context of every result."""
    from sequoia_clinic.bundles.store import load_bundle
    from sequoia_clinic.pipeline.predict import effective_settings
    from sequoia_clinic.pipeline.score import DEFAULT_RISK_MODEL
    from sequoia_clinic.survival.model import RiskModel

    bundle = load_bundle(request.bundle, settings)  # generates missing demo weights once, here
    model_path = Path(request.risk_model) if request.risk_model is not None else DEFAULT_RISK_MODEL
    model = RiskModel.load(model_path)
    missing = sorted(set(model.genes) - set(bundle.genes))
    if missing:
        raise RiskModelError(
            f"{len(missing)} gene(s) of the risk model are not predicted by bundle '{bundle.name}': "
            + ", ".join(missing[:8]),
            path=model_path,
            fix="Use a risk model calibrated on genes this bundle predicts.",
        )
    clash = sorted(set(manifest.clinical_columns) & set(model.genes))
    if clash:
        raise TableError(
            f"clinical column(s) named like signature genes: {', '.join(clash)}",
            manifest.path,
            "Rename those columns.",
        )
    context = KeyContext(
        bundle_path=str(bundle.path.resolve()),
        bundle_manifest_sha256=bundle.manifest_sha256,
        bundle_trained=bundle.trained,
        risk_model_path=str(model_path.resolve()),
        risk_model_sha256=sha256_file(model_path),
        formats=request.reports.formats,
        settings=canonical_json(key_settings(effective_settings(settings, bundle))),
    )
    return Plan.build(
        manifest, context, tuple(bundle.genes), tuple(model.genes), tuple(model.group_names), request.endpoint
    )


def _jobs(
    plan: Plan, states: list[RowState], request: CohortRequest
) -> tuple[list[SlideJob], tuple[str, ...]]:
    """This shard's rows still to score, and those left out as quarantined."""
    part = {r.slide_id for r in request.shard.select(plan.rows)}
    jobs, quarantined = [], []
    for state in states:
        row = state.row
        if row.slide_id not in part or state.status == RowStatus.OK:
            continue
        if state.failed_attempts >= request.max_attempts and not request.retry_failed:
            quarantined.append(row.slide_id)
            continue
        jobs.append(
            SlideJob(
                slide_id=row.slide_id,
                slide=row.slide,
                patient_id=row.patient_id,
                mpp=row.mpp,
                context=plan.context,
                known_sha256=state.slide_sha256,
                known_stat=state.stat if state.slide_sha256 else "",
            )
        )
    return jobs, tuple(quarantined)


def run_cohort(
    request: CohortRequest,
    settings: Settings,
    on_progress: ProgressCallback | None = None,
    on_info: InfoCallback | None = None,
) -> CohortOutcome:
    """Score the manifest's slides not yet committed, then rebuild the tables and the summary."""
    started = time.monotonic()
    info = on_info or (lambda line: None)
    progress = on_progress or (lambda snapshot: None)
    _check_request(request)
    manifest = read_manifest(request.manifest, request.time_unit, RESERVED_COLUMNS)
    check_output_dir(request.out_dir)
    plan = make_plan(manifest, request, settings)
    store = CohortStore(request.out_dir)
    store.create()
    previous = store.read_plan()
    changes = tuple(plan_changes(previous, plan)) if previous is not None else ()
    for change in changes:
        info(f"plan changed since the last run: {change}")
    store.write_plan(plan)

    states = row_states(plan, store, store.read_ledger())
    jobs, quarantined = _jobs(plan, states, request)
    if quarantined:
        info(
            f"{len(quarantined)} slide(s) failed {request.max_attempts} time(s) and are skipped "
            "(pass --retry-failed to try them again)"
        )
    threads = local_threads(request.engine.workers) if request.engine.kind == ExecutorKind.LOCAL else None
    config = WorkerConfig(request.out_dir.resolve(), settings, request.slide_timeout_s, threads)
    tally = _Tally(len(jobs), progress, info)
    if jobs:
        run_jobs(request.engine, config, jobs, tally.add, tally.start)

    tables = write_tables(plan, store)
    summary = summarise(plan, tables, store)
    part_ids = {r.slide_id for r in request.shard.select(plan.rows)}
    return CohortOutcome(
        out_dir=request.out_dir,
        summary=summary,
        part=tuple(s for s in tables.states if s.row.slide_id in part_ids),
        dispatched=len(jobs),
        computed=tally.computed,
        skipped_quarantined=quarantined,
        plan_changes=changes,
        files=tables.files + summary.files,
        seconds=time.monotonic() - started,
    )


@dataclass
class _Tally:
    """Counts attempts as they end and forwards progress snapshots."""

    total: int
    progress: ProgressCallback
    info: InfoCallback
    slots: int = 1
    done: int = 0
    failed: int = 0
    computed: int = 0
    started: float = field(default_factory=time.monotonic)

    def start(self, engine: EngineInfo) -> None:
        self.slots = engine.slots
        self.started = time.monotonic()
        if engine.dashboard:
            self.info(f"Dask dashboard: {engine.dashboard} ({engine.slots} slide(s) at a time)")
        self._emit()

    def add(self, entry: AttemptEntry) -> None:
        self.done += 1
        self.failed += 0 if entry.status is not None and entry.status.ok else 1
        self.computed += 1 if entry.status is not None and entry.status.computed else 0
        self._emit()

    def _emit(self) -> None:
        running = min(self.slots, self.total - self.done)
        self.progress(CohortProgress(self.total, self.done, self.failed, running, self.started))


def _open_store(out_dir: Path) -> tuple[CohortStore, Plan]:
    store = CohortStore(Path(out_dir))
    plan = store.read_plan() if store.root.is_dir() else None
    if plan is None:
        raise OptionError(
            "is not a cohort output folder (no plan.json)",
            path=out_dir,
            fix="Pass the --out folder of a `cohort run`.",
        )
    return store, plan


def rebuild_tables(out_dir: Path) -> tuple[CohortSummary, tuple[Path, ...]]:
    """``cohort table``: rebuild every table and the summary from what is committed (e.g. after shards)."""
    store, plan = _open_store(out_dir)
    tables = write_tables(plan, store)
    summary = summarise(plan, tables, store)
    return summary, tables.files + summary.files


@dataclass(frozen=True)
class CohortStatus:
    """``cohort status``: counts by status and every failure with its reason (nothing is written)."""

    n: int
    counts: tuple[tuple[str, int], ...]
    failures: tuple[RowState, ...]
    attempts: int  # attempts recorded in the ledger
    in_flight: int  # attempts started without an end (running now, or their worker died)


def cohort_status(out_dir: Path) -> CohortStatus:
    store, plan = _open_store(out_dir)
    ledger = store.read_ledger()
    states = row_states(plan, store, ledger)
    counts = tuple((s.value, sum(1 for x in states if x.status == s)) for s in RowStatus)
    ended = {e.attempt_id for e in ledger if e.event == "end"}
    starts = [e for e in ledger if e.event == "start"]
    return CohortStatus(
        n=len(states),
        counts=counts,
        failures=tuple(s for s in states if s.status in (RowStatus.FAILED, RowStatus.TIMEOUT)),
        attempts=len(starts),
        in_flight=sum(1 for e in starts if e.attempt_id not in ended),
    )


__all__ = [
    "AttemptStatus",
    "CohortOutcome",
    "CohortProgress",
    "CohortRequest",
    "CohortStatus",
    "EngineSpec",
    "ExecutorKind",
    "ReportsMode",
    "Shard",
    "cohort_status",
    "rebuild_tables",
    "run_cohort",
]
