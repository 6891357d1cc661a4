"""Where cohort jobs run. Engines only place jobs; correctness lives in the store (:mod:`.cohort_store`).

* ``local`` with one worker: in this process, one slide after another (each still in its own child);
* ``local`` with N workers: a Dask ``LocalCluster`` of N single-threaded worker processes on this machine;
* ``dask``: an existing Dask scheduler (``--scheduler-address`` or ``--scheduler-file``), e.g. a SLURM or
  Kubernetes cluster built with dask-jobqueue / dask-kubernetes outside this tool.

On Dask, every worker gets a :class:`CohortWorkerPlugin` that owns that worker's
:class:`~sequoia_clinic.pipeline.cohort_isolation.SlideExecutor` (its slide helper and ledger file), so a
task carries only the slide's path and the key context. Slides run in child processes, so a worker death
is infrastructure, not the slide: the scheduler's ``allowed-failures`` is raised to
:data:`ALLOWED_FAILURES` on a LocalCluster (set it in the scheduler's config on your own cluster). A task
the scheduler gives up on is recorded in the ledger as a failed attempt.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin

from sequoia_clinic.errors import OptionError
from sequoia_clinic.pipeline.cohort_choices import ExecutorKind
from sequoia_clinic.pipeline.cohort_isolation import SlideExecutor, SlideJob, WorkerConfig, one_line
from sequoia_clinic.pipeline.cohort_plan import stat_fingerprint
from sequoia_clinic.pipeline.cohort_store import (
    AttemptEntry,
    AttemptStatus,
    CohortStore,
    new_attempt_id,
    writer_name,
)

ALLOWED_FAILURES = 10  # worker deaths a task survives on a LocalCluster (Dask's default is 3)
PLUGIN_PREFIX = "sequoia-clinic-cohort"


@dataclass(frozen=True)
class EngineSpec:
    """Where to run: the executor, the local worker count and the scheduler of ``dask``."""

    kind: ExecutorKind = ExecutorKind.LOCAL
    workers: int = 1
    scheduler_address: str | None = None
    scheduler_file: Path | None = None

    def check(self) -> None:
        """Refuse inconsistent options (before any work)."""
        if self.workers < 1:
            raise OptionError("must be at least 1", option="workers")
        given = [x for x in (self.scheduler_address, self.scheduler_file) if x]
        if len(given) > 1:
            raise OptionError(
                "--scheduler-address and --scheduler-file are exclusive", fix="Pass one of them."
            )
        if self.kind == ExecutorKind.DASK and not given:
            raise OptionError(
                "needs --scheduler-address or --scheduler-file",
                fix="Start a scheduler (e.g. with dask-jobqueue) and pass its address, or use --executor local.",
                option="executor",
            )
        if self.kind == ExecutorKind.LOCAL and given:
            raise OptionError(
                "a scheduler is given with --executor local",
                fix="Pass --executor dask to use that scheduler.",
                option="executor",
            )
        if self.scheduler_file is not None and not Path(self.scheduler_file).is_file():
            raise OptionError("not found", path=self.scheduler_file, fix="Pass the scheduler's JSON file.")


@dataclass(frozen=True)
class EngineInfo:
    """Told once the engine is up: how many slides run at once, and the Dask dashboard (if any)."""

    slots: int
    dashboard: str | None


OutcomeCallback = Callable[[AttemptEntry], None]
StartCallback = Callable[[EngineInfo], None]


def run_jobs(
    spec: EngineSpec,
    config: WorkerConfig,
    jobs: Sequence[SlideJob],
    on_outcome: OutcomeCallback,
    on_start: StartCallback,
) -> None:
    """Run every job once (attempts are at least once on Dask) and report each attempt's end entry."""
    if spec.kind == ExecutorKind.LOCAL and spec.workers == 1:
        on_start(EngineInfo(1, None))
        with SlideExecutor(config) as executor:
            for job in jobs:
                on_outcome(executor.execute(job))
        return
    with _dask_client(spec) as client:
        _run_on_dask(client, config, jobs, on_outcome, on_start)


def local_threads(workers: int) -> int:
    """Torch threads per slide so that ``workers`` parallel slides share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // workers)


# ---- Dask --------------------------------------------------------------------------------------------------
class CohortWorkerPlugin(WorkerPlugin):
    """A Dask worker plugin holding the worker's slide executor (helper process + ledger file)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.executor: SlideExecutor | None = None

    def setup(self, worker: Any) -> None:
        self.started()

    def started(self) -> SlideExecutor:
        """The worker's executor, started on first use."""
        if self.executor is None:
            self.executor = SlideExecutor(self.config)
            self.executor.start()
        return self.executor

    def teardown(self, worker: Any) -> None:
        if self.executor is not None:
            self.executor.close()
            self.executor = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "executor": None}


def execute_on_worker(job: SlideJob, plugin_name: str) -> AttemptEntry:
    """The Dask task: run ``job`` with this worker's executor."""
    from distributed import get_worker

    plugin = get_worker().plugins[plugin_name]
    assert isinstance(plugin, CohortWorkerPlugin)
    return plugin.started().execute(job)


@contextmanager
def _dask_client(spec: EngineSpec) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    config = {
        "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    if spec.kind == ExecutorKind.DASK:
        client = (
            Client(spec.scheduler_address)
            if spec.scheduler_address
            else Client(scheduler_file=str(spec.scheduler_file))
        )
        try:
            yield client
        finally:
            client.close()
        return
    with dask.config.set(config):
        dashboard = ":0" if importlib.util.find_spec("bokeh") is not None else None
        cluster = LocalCluster(
            n_workers=spec.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard,
            silence_logs=logging.CRITICAL,
        )
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


def _dashboard(client: Any) -> str | None:
    """The scheduler's dashboard link, or None when it has none (bokeh not installed there)."""
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError, ValueError):
        return None
    return str(link) if link else None


def _run_on_dask(
    client: Any,
    config: WorkerConfig,
    jobs: Sequence[SlideJob],
    on_outcome: OutcomeCallback,
    on_start: StartCallback,
) -> None:
    from distributed import as_completed

    name = f"{PLUGIN_PREFIX}-{uuid.uuid4().hex[:8]}"
    client.register_plugin(CohortWorkerPlugin(config), name=name)
    try:
        slots = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()) or 1
        on_start(EngineInfo(slots, _dashboard(client)))
        futures = {
            client.submit(
                execute_on_worker, job, name, key=f"cohort-{job.slide_id}-{uuid.uuid4().hex[:8]}", pure=False
            ): job
            for job in jobs
        }
        store = CohortStore(config.store)
        for future in as_completed(futures):
            job = futures.pop(future)
            try:
                entry = future.result()
            except Exception as exc:  # the scheduler gave up (e.g. KilledWorker): the ledger records it
                entry = _engine_failure(store, job, exc)
            # Forget the result at once: Dask recomputes held results lost with a dead worker.
            future.release()
            on_outcome(entry)
    finally:
        try:
            client.unregister_worker_plugin(name)
        except Exception:  # noqa: BLE001 - workers already gone: nothing left to tear down
            pass


def _engine_failure(store: CohortStore, job: SlideJob, exc: BaseException) -> AttemptEntry:
    writer = writer_name()
    entry = AttemptEntry(
        event="end",
        attempt_id=new_attempt_id(),
        slide_id=job.slide_id,
        slide=str(job.slide),
        stat=stat_fingerprint(job.slide),
        host=writer.rsplit("-", 1)[0],
        pid=os.getpid(),
        time=time.time(),
        status=AttemptStatus.FAILED,
        error_class=type(exc).__name__,
        message=one_line(f"the Dask engine gave up on this slide: {exc}"),
    )
    store.append(writer, entry)
    return entry
