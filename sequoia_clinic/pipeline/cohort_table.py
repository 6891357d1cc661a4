"""Cohort tables, rebuilt from what the store holds: one row per manifest row, exactly once.

Each plan row is joined to its result through the ledger: the row's latest attempt with the slide's
current stat fingerprint gives the slide's content hash, hence its result key; the committed record of
that key (if any) makes the row ``ok``. Otherwise the row is ``failed`` or ``timeout`` (its last failed
attempt under the current key, with the one-line reason) or ``pending`` (never attempted, or its only
attempts died with their worker).

Written (each file atomically):

* ``cohort.parquet`` / ``cohort.csv``: ids, status and reason, risk (score, linear predictor, group,
  absolute risks with CIs), the risk model's signature gene predictions, QC codes and counts, the result
  key, outcome and clinical columns, and the run-dependent columns (:data:`RUN_COLUMNS`, ``seconds_*``);
* ``expression.parquet``: the ``ok`` rows' full predicted expression (float32, bundle gene order) after
  the id, outcome and clinical columns: the table ``calibrate --expression-source predicted`` takes;
* ``slides/<slide_id>``: a link to each ``ok`` row's result folder (result.json, report.pdf, ...).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sequoia_clinic.fileio import atomic_path
from sequoia_clinic.pipeline.cohort_manifest import ManifestRow
from sequoia_clinic.pipeline.cohort_plan import Plan, result_key, stat_fingerprint
from sequoia_clinic.pipeline.cohort_store import AttemptEntry, AttemptStatus, CohortStore, SlideResult


class RowStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    PENDING = "pending"


ID_COLUMNS = ("slide_id", "patient_id", "slide")
STATUS_COLUMNS = ("status", "error_class", "reason", "failed_attempts")
RISK_COLUMNS = ("risk_score", "linear_predictor", "risk_group", "risk_group_index")
QC_COLUMNS = (
    "qc_codes",
    "qc_warnings",
    "tiles_kept",
    "tiles_used",
    "tissue_fraction",
    "mpp",
    "mpp_source",
    "precision",
    "bundle_trained",
)
KEY_COLUMNS = ("result_key", "slide_sha256", "result_dir")
# Columns that depend on the run, not on the slide (timings, the feature cache, the machine):
RUN_COLUMNS = ("device", "cache_hit", "seconds_attempt", "peak_rss_mb")
TIMING_PREFIX = "seconds_"
RESERVED_COLUMNS = (
    ID_COLUMNS + STATUS_COLUMNS + RISK_COLUMNS + QC_COLUMNS + KEY_COLUMNS + RUN_COLUMNS + ("time", "event")
)
SLIDES_LINKS = "slides"


@dataclass(frozen=True)
class RowState:
    """Where one manifest row stands, from the store."""

    row: ManifestRow
    status: RowStatus
    stat: str
    key: str | None = None
    slide_sha256: str | None = None
    result: SlideResult | None = None
    failed_attempts: int = 0
    error_class: str | None = None
    reason: str | None = None
    committing_attempt: AttemptEntry | None = None


def row_states(plan: Plan, store: CohortStore, ledger: list[AttemptEntry]) -> list[RowState]:
    """Every plan row's state (manifest order), joined through the ledger."""
    ends: dict[str, list[AttemptEntry]] = defaultdict(list)
    by_attempt: dict[str, AttemptEntry] = {}
    for entry in ledger:
        if entry.event == "end":
            ends[entry.slide_id].append(entry)
            by_attempt[entry.attempt_id] = entry
    return [_row_state(row, plan, store, ends[row.slide_id], by_attempt) for row in plan.rows]


def _row_state(
    row: ManifestRow,
    plan: Plan,
    store: CohortStore,
    ends: list[AttemptEntry],
    by_attempt: dict[str, AttemptEntry],
) -> RowState:
    stat = stat_fingerprint(row.slide)
    mine = [e for e in ends if e.slide == str(row.slide) and e.stat == stat]
    sha = next((e.slide_sha256 for e in reversed(mine) if e.slide_sha256), None)
    key = result_key(sha, row.patient_id, row.mpp, plan.context) if sha else None
    result = store.read_result(key) if key else None
    failures = [
        e
        for e in mine
        if e.status in (AttemptStatus.FAILED, AttemptStatus.TIMEOUT) and (e.key is None or e.key == key)
    ]
    if result is not None:
        return RowState(
            row,
            RowStatus.OK,
            stat,
            key,
            sha,
            result,
            len(failures),
            committing_attempt=by_attempt.get(result.attempt_id),
        )
    if failures:
        last = failures[-1]
        status = RowStatus.TIMEOUT if last.status == AttemptStatus.TIMEOUT else RowStatus.FAILED
        return RowState(row, status, stat, key, sha, None, len(failures), last.error_class, last.message)
    return RowState(row, RowStatus.PENDING, stat, key, sha)


def _horizons(states: list[RowState]) -> list[float]:
    return sorted({h.years for s in states if s.result for h in s.result.horizons})


def _timing_names(states: list[RowState]) -> list[str]:
    names: dict[str, None] = {}
    for state in states:
        if state.result:
            names.update(dict.fromkeys(k for k, _ in state.result.timings))
    return list(names)


def _timing_column(name: str) -> str:
    return TIMING_PREFIX + name.replace(".", "_")


def _numeric_or_text(values: list[str]) -> pd.Series:
    """A clinical column: numbers when every non-empty value is one, else the text as written."""
    series = pd.Series(values, dtype=object)
    numbers = pd.to_numeric(series.replace("", np.nan), errors="coerce")
    if (numbers.notna() | (series == "")).all() and numbers.notna().any():
        return numbers
    return series.astype(str)


def cohort_frame(plan: Plan, states: list[RowState], store: CohortStore) -> pd.DataFrame:
    """The cohort table (see the module docstring), one row per plan row in manifest order."""
    horizons = _horizons(states)
    timings = _timing_names(states)
    records: list[dict[str, object]] = []
    for state in states:
        row, result = state.row, state.result
        item: dict[str, object] = {
            "slide_id": row.slide_id,
            "patient_id": row.patient_id,
            "slide": str(row.slide),
            "status": state.status.value,
            "error_class": state.error_class or "",
            "reason": state.reason or "",
            "failed_attempts": state.failed_attempts,
        }
        item |= _risk_fields(result, horizons)
        item |= {gene: np.nan for gene in plan.signature_genes}
        if result is not None:
            item |= dict(result.signature_genes)
        item |= _qc_fields(result)
        item |= {
            "result_key": state.key or "",
            "slide_sha256": state.slide_sha256 or "",
            "result_dir": f"{SLIDES_LINKS}/{row.slide_id}" if result is not None else "",
        }
        if plan.has_outcomes:
            item |= {"time": np.nan if row.time is None else row.time, "event": row.event}
        item |= dict(row.clinical)
        attempt = state.committing_attempt
        item |= {
            "device": result.device if result else "",
            "cache_hit": result.cache_hit if result else None,
            "seconds_attempt": attempt.seconds if attempt and attempt.seconds is not None else np.nan,
            "peak_rss_mb": attempt.peak_rss_mb if attempt and attempt.peak_rss_mb is not None else np.nan,
        }
        stage = dict(result.timings) if result else {}
        item |= {_timing_column(name): stage.get(name, np.nan) for name in timings}
        records.append(item)
    frame = pd.DataFrame.from_records(records)
    for column in plan.clinical_columns:
        frame[column] = _numeric_or_text([v for v in frame[column]])
    if plan.has_outcomes:
        frame["event"] = frame["event"].map({True: 1, False: 0}).astype("Int64")
    frame["cache_hit"] = frame["cache_hit"].astype("boolean")
    frame["bundle_trained"] = frame["bundle_trained"].astype("boolean")
    for column in ("risk_group_index", "tiles_kept", "tiles_used", "qc_warnings"):
        frame[column] = frame[column].astype("Int64")
    return frame


def _risk_fields(result: SlideResult | None, horizons: list[float]) -> dict[str, object]:
    fields: dict[str, object] = {
        "risk_score": result.risk_score if result else np.nan,
        "linear_predictor": result.linear_predictor if result else np.nan,
        "risk_group": result.risk_group if result else "",
        "risk_group_index": result.risk_group_index if result else None,
    }
    values = {h.years: h for h in result.horizons} if result else {}
    for years in horizons:
        h = values.get(years)
        name = f"risk_{years:g}y"
        fields[name] = np.nan if h is None or h.risk is None else h.risk
        fields[f"{name}_lower"] = np.nan if h is None or h.lower is None else h.lower
        fields[f"{name}_upper"] = np.nan if h is None or h.upper is None else h.upper
    return fields


def _qc_fields(result: SlideResult | None) -> dict[str, object]:
    if result is None:
        return {
            c: None for c in ("qc_codes", "qc_warnings", "tiles_kept", "tiles_used", "bundle_trained")
        } | {
            "tissue_fraction": np.nan,
            "mpp": np.nan,
            "mpp_source": "",
            "precision": "",
        }
    return {
        "qc_codes": ";".join(dict.fromkeys(result.qc_codes)),
        "qc_warnings": len(result.qc_codes),
        "tiles_kept": result.tiles_kept,
        "tiles_used": result.tiles_used,
        "tissue_fraction": result.tissue_fraction,
        "mpp": result.mpp,
        "mpp_source": result.mpp_source,
        "precision": result.precision,
        "bundle_trained": result.bundle_trained,
    }


def expression_table(plan: Plan, states: list[RowState], store: CohortStore) -> pa.Table:
    """``ok`` rows x (ids, outcome and clinical columns, then every bundle gene as float32)."""
    ok = [s for s in states if s.result is not None]
    matrix = np.zeros((len(ok), len(plan.genes)), dtype=np.float32)
    for i, state in enumerate(ok):
        assert state.result is not None and state.key is not None
        files = store.results_dir / state.key[:2] / state.result.files
        matrix[i] = np.load(files / "expression.npy")
    columns: dict[str, pa.Array] = {
        "slide_id": pa.array([s.row.slide_id for s in ok], pa.string()),
        "patient_id": pa.array([s.row.patient_id for s in ok], pa.string()),
    }
    if plan.has_outcomes:
        columns["time"] = pa.array([s.row.time for s in ok], pa.float64())
        columns["event"] = pa.array(
            [None if s.row.event is None else int(s.row.event) for s in ok], pa.int64()
        )
    for k, column in enumerate(plan.clinical_columns):
        values = _numeric_or_text([s.row.clinical[k][1] for s in ok]) if ok else pd.Series([], dtype=object)
        columns[column] = pa.array(values.tolist())
    for j, gene in enumerate(plan.genes):
        columns[gene] = pa.array(matrix[:, j], pa.float32())
    return pa.table(columns)


def _link_slides(store: CohortStore, states: list[RowState]) -> None:
    """``slides/<slide_id>`` → the row's result folder, for ``ok`` rows only (stale links removed)."""
    folder = store.root / SLIDES_LINKS
    folder.mkdir(exist_ok=True)
    wanted: dict[str, str] = {}
    for state in states:
        if state.result is not None and state.key is not None:
            wanted[state.row.slide_id] = os.path.join("..", "results", state.key[:2], state.result.files)
    for link in folder.iterdir():  # a concurrent shard's temporary links start with "."
        if link.name not in wanted and not link.name.startswith(".") and link.is_symlink():
            link.unlink(missing_ok=True)
    for name, target in wanted.items():
        link = folder / name
        if link.is_symlink() and os.readlink(link) == target:
            continue
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)


@dataclass(frozen=True)
class CohortTables:
    states: tuple[RowState, ...]
    frame: pd.DataFrame
    files: tuple[Path, ...]


def write_tables(plan: Plan, store: CohortStore) -> CohortTables:
    """Rebuild and write cohort.parquet, cohort.csv, expression.parquet and the slides/ links."""
    states = row_states(plan, store, store.read_ledger())
    frame = cohort_frame(plan, states, store)
    files = []
    for name in ("cohort.parquet", "cohort.csv"):
        target = store.root / name
        with atomic_path(target) as tmp:
            if name.endswith(".parquet"):
                frame.to_parquet(tmp, index=False)
            else:
                frame.to_csv(tmp, index=False)
        files.append(target)
    target = store.root / "expression.parquet"
    with atomic_path(target) as tmp:
        pq.write_table(expression_table(plan, states, store), tmp)
    files.append(target)
    _link_slides(store, states)
    return CohortTables(tuple(states), frame, tuple(files))
