"""Per-slide isolation, child side: the helper process and the work of one slide in its forked child.

``python -m sequoia_clinic.pipeline.cohort_worker REQUEST_FD REPLY_FD`` is started by
:class:`~sequoia_clinic.pipeline.cohort_isolation.SlideRunner`. The helper imports the scoring stack once,
warms it up on the packaged demo slide (:func:`warm_up`), then for each request forks a child that

1. makes itself a process-group leader and asks the kernel to kill it when the helper dies (Linux);
2. hashes the slide (or reuses the ledger's hash while the slide's stat fingerprint is unchanged) and
   derives the result key; a key already committed is not computed again;
3. calls :func:`sequoia_clinic.pipeline.score.score_slide` into the attempt's own folder, saves the full
   predicted expression (``expression.npy``, float32, bundle gene order) beside it and commits the
   :class:`~sequoia_clinic.pipeline.cohort_store.SlideResult` create-exclusively;
4. writes a :class:`~sequoia_clinic.pipeline.cohort_isolation.ChildReport` for the parent and exits
   (0 done, 3 a reported failure).

The helper waits for the child, kills its process group after the slide timeout, and exits (killing the
child) as soon as the request pipe closes, i.e. when its parent is gone.

Test hook (read here, at the process boundary, and nowhere else): the environment variable
``SEQUOIA_CLINIC_TEST_POISON_SHA256`` (comma-separated slide sha256s) makes the child of such a slide
SIGKILL itself right after hashing, to test that a native crash fails that slide only.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import pickle
import resource
import select
import shutil
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from sequoia_clinic.errors import BundleError, InputPathError, RiskModelError, SequoiaError
from sequoia_clinic.pipeline.cohort_isolation import (
    HANDLED_FAILURE_EXIT,
    ChildExit,
    ChildReport,
    ChildRequest,
    SlideJob,
    WarmUpRequest,
    one_line,
)
from sequoia_clinic.pipeline.cohort_plan import result_key, stat_fingerprint
from sequoia_clinic.pipeline.cohort_store import AttemptStatus, CohortStore, HorizonValue, SlideResult
from sequoia_clinic.settings import Device, Settings
from sequoia_clinic.slides.opening import slide_sha256

POISON_ENV = "SEQUOIA_CLINIC_TEST_POISON_SHA256"
PR_SET_PDEATHSIG = 1
UNEXPECTED_EXIT = 70


# ---- the work of one slide (in the child) ---------------------------------------------------------------
def _check_identity(outcome: object, job: SlideJob, sha256: str) -> None:
    """The slide, bundle and risk model scored are the ones the key names (shared folders can change)."""
    from sequoia_clinic.pipeline.score import ScoreOutcome

    assert isinstance(outcome, ScoreOutcome)
    context = job.context
    if outcome.prediction.slide_sha256 != sha256:
        raise InputPathError("changed while it was being scored", job.slide, "Score it again.")
    if outcome.prediction.bundle_manifest_sha256 != context.bundle_manifest_sha256:
        raise BundleError(
            "differs on this worker from the bundle the run was planned with",
            context.bundle_path,
            "Give every worker the same bundle folder.",
        )
    if outcome.report.provenance.risk_model_sha256 != context.risk_model_sha256:
        raise RiskModelError(
            "differs on this worker from the risk model the run was planned with",
            context.risk_model_path,
            "Give every worker the same risk model file.",
        )


def slide_result(outcome: object, key: str, attempt_id: str, files: str) -> SlideResult:
    """The committed record of a scored slide, from the report records (no patient identifiers)."""
    from sequoia_clinic.pipeline.score import ScoreOutcome

    assert isinstance(outcome, ScoreOutcome)
    report = outcome.report
    risk = report.risk
    return SlideResult(
        key=key,
        slide_sha256=outcome.prediction.slide_sha256,
        attempt_id=attempt_id,
        files=files,
        created=report.created,
        linear_predictor=float(risk.linear_predictor),
        risk_score=float(risk.score),
        risk_group=outcome.risk.group,  # the risk model's own group name (the report capitalises it)
        risk_group_index=int(risk.group_index),
        horizons=tuple(HorizonValue(h.horizon, h.risk, h.lower, h.upper) for h in risk.absolute_risks),
        signature_genes=tuple((g.gene, float(g.expression)) for g in report.signature.genes),
        qc_codes=tuple(str(w.code) for w in report.qc.warnings),
        qc_messages=tuple(w.message for w in report.qc.warnings),
        tiles_kept=int(report.qc.tiles_kept),
        tiles_used=int(report.qc.tiles_used),
        tissue_fraction=float(report.qc.tissue_fraction),
        mpp=float(report.slide.mpp),
        mpp_source=report.slide.mpp_source,
        slide_format=report.slide.format,
        width_px=int(report.slide.width_px),
        height_px=int(report.slide.height_px),
        bundle_trained=bool(report.provenance.bundle_trained),
        precision=report.provenance.precision,
        device=report.provenance.device,
        cache_hit=bool(outcome.prediction.cache_hit),
        timings=tuple((k, round(float(v), 3)) for k, v in report.timings.items()),
    )


def score_job(
    job: SlideJob, key: str, sha256: str, settings: Settings, store: CohortStore, attempt_id: str
) -> ChildReport:
    """Score one slide into its attempt folder and commit it (unless its key is committed already)."""
    from sequoia_clinic.pipeline.patient import PatientOptions
    from sequoia_clinic.pipeline.score import ScoreRequest, score_slide
    from sequoia_clinic.report.files import OutputFormat

    if store.is_committed(key):
        return ChildReport(AttemptStatus.ALREADY_DONE, key, sha256)
    files = store.files_dir(key, attempt_id)
    context = job.context
    request = ScoreRequest(
        slide=job.slide,
        out_dir=files,
        bundle=Path(context.bundle_path),
        risk_model=Path(context.risk_model_path),
        mpp=job.mpp,
        patient=PatientOptions(patient_id=job.patient_id),
        formats=tuple(OutputFormat(f) for f in context.formats),
    )
    outcome = score_slide(request, settings)
    _check_identity(outcome, job, sha256)
    np.save(files / "expression.npy", outcome.prediction.expression.astype(np.float32))
    result = slide_result(outcome, key, attempt_id, files.name)
    won = store.commit(result)
    if not won:
        shutil.rmtree(files, ignore_errors=True)
    status = AttemptStatus.COMMITTED if won else AttemptStatus.DUPLICATE
    return ChildReport(status, key, sha256, timings=result.timings)


def _job_sha256(job: SlideJob) -> str:
    if job.known_sha256 and job.known_stat and stat_fingerprint(job.slide) == job.known_stat:
        return job.known_sha256
    return slide_sha256(job.slide)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # Linux: kB


def _set_threads(threads: int | None) -> None:
    """Torch threads for this slide (the helper warms up single-threaded; see :func:`warm_up`)."""
    import torch

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


def child_main(request: ChildRequest, poison: frozenset[str]) -> int:
    """The forked child's whole life: score the slide, write the report file, return the exit code."""
    job, config = request.job, request.config
    store = CohortStore(config.store)
    sha256: str | None = None
    key: str | None = None
    code = 0
    try:
        _set_threads(config.threads)
        sha256 = _job_sha256(job)
        if sha256 in poison:  # test hook (module docstring): a native crash of this slide's process
            os.kill(os.getpid(), signal.SIGKILL)
        key = result_key(sha256, job.patient_id, job.mpp, job.context)
        report = score_job(job, key, sha256, config.settings, store, request.attempt_id)
    except SequoiaError as exc:
        code = HANDLED_FAILURE_EXIT
        report = ChildReport(AttemptStatus.FAILED, key, sha256, type(exc).__name__, one_line(str(exc)))
    except Exception as exc:  # a bug or an unexpected library error: the slide fails, the traceback is kept
        code = HANDLED_FAILURE_EXIT
        name = f"{request.attempt_id}.txt"
        store.tracebacks_dir.mkdir(parents=True, exist_ok=True)
        (store.tracebacks_dir / name).write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
        message = one_line(f"{exc}" or type(exc).__name__)
        report = ChildReport(AttemptStatus.FAILED, key, sha256, type(exc).__name__, message, name)
    report = dataclasses.replace(report, peak_rss_mb=_peak_rss_mb())
    tmp = request.report_path.with_suffix(".part")
    with open(tmp, "wb") as handle:
        pickle.dump(report, handle)
    os.replace(tmp, request.report_path)
    return code


# ---- the helper --------------------------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent (the helper) dies; exit if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(UNEXPECTED_EXIT)


def _kill_group(pid: int) -> None:
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


def run_forked(
    request: ChildRequest, requests: Connection, replies: Connection, poison: frozenset[str]
) -> ChildExit:
    """Fork a child for ``request`` and wait for it, killing its group on timeout or when the parent goes."""
    start = time.monotonic()
    helper = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child
        code = UNEXPECTED_EXIT
        try:
            os.setpgid(0, 0)
            requests.close()
            replies.close()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _die_with_parent(helper)
            code = child_main(request, poison)
        except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the helper
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    try:
        os.setpgid(pid, pid)  # also here: no window in which a kill of the group could miss the child
    except OSError:
        pass
    deadline = start + request.config.slide_timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return ChildExit(os.waitstatus_to_exitcode(status), False, time.monotonic() - start)
        if time.monotonic() >= deadline:
            _kill_group(pid)
            os.waitpid(pid, 0)
            return ChildExit(-signal.SIGKILL, True, time.monotonic() - start)
        readable, _, _ = select.select([requests.fileno()], [], [], 0.02)
        if readable:  # the parent never writes while a slide runs: readable means its end closed
            _kill_group(pid)
            os.waitpid(pid, 0)
            raise SystemExit(0)


def warm_up(request: WarmUpRequest) -> None:
    """Score the packaged demo slide once in the helper, single-threaded, before the first fork.

    Everything the scoring stack initialises lazily on first use (modules imported inside functions,
    matplotlib fonts, reportlab, torch kernels) is then inherited by every child instead of being redone
    per slide. One thread only: a child forked after a multi-threaded OpenMP region can hang (libgomp is
    not fork-safe), so no parallel region runs in the helper; and on the CPU only, so that CUDA is first
    initialised in each child. A failure here is ignored: the slide's own child reports any real problem.
    """
    import tempfile

    import torch

    from sequoia_clinic.locations import demo_slide
    from sequoia_clinic.pipeline.score import ScoreRequest, score_slide
    from sequoia_clinic.report.files import OutputFormat

    torch.set_num_threads(1)
    context = request.job.context
    # On the CPU even for --device cuda: CUDA initialised in the helper would be unusable in its forks.
    settings = dataclasses.replace(request.config.settings, cache_dir=None, device=Device.CPU)
    with tempfile.TemporaryDirectory(prefix="sequoia-warm-up-") as folder:
        warm = ScoreRequest(
            slide=demo_slide(),
            out_dir=Path(folder) / "out",
            bundle=Path(context.bundle_path),
            risk_model=Path(context.risk_model_path),
            formats=(OutputFormat.PDF, OutputFormat.JSON),
        )
        try:
            score_slide(warm, settings)
        except Exception:  # noqa: BLE001 - see the docstring
            traceback.print_exc()


def serve(requests: Connection, replies: Connection, poison: frozenset[str]) -> None:
    """Import the scoring stack once, say ready, warm up when asked, then fork one child per slide until EOF."""
    import sequoia_clinic.pipeline.score  # noqa: F401  (torch, timm, ... imported once, shared by every fork)

    replies.send(os.getpid())
    while True:
        try:
            request = requests.recv()
        except (EOFError, OSError):
            return
        if isinstance(request, WarmUpRequest):
            warm_up(request)
            replies.send(True)
            continue
        replies.send(run_forked(request, requests, replies, poison))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which closes the pipe
    requests = Connection(int(argv[0]), writable=False)
    replies = Connection(int(argv[1]), readable=False)
    poison = frozenset(s for s in os.environ.get(POISON_ENV, "").split(",") if s)
    serve(requests, replies, poison)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
