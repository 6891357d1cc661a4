"""Cohort summary: status and QC counts, the risk-score distribution and, when the manifest has outcomes,
the Kaplan-Meier stratification of the scored slides by the risk model's frozen groups.

The survival analysis is the ``stratify`` stage itself (:func:`sequoia_clinic.survival.stratify.stratify`
on the ``ok`` rows with an outcome: groups from the risk model's frozen cut-offs applied to each slide's
linear predictor; KM curves with at-risk tables, log-rank tests, hazard ratios, Harrell's C), written to
``survival/`` by :func:`~sequoia_clinic.survival.stratify.write_outputs`. Added here: a bootstrap 95% CI of
the C-index (seeded). Written: ``summary.json`` and ``cohort_summary.pdf`` (cohort size, failures and QC,
score distribution, KM by group, C-index with CI). A survival analysis that cannot be made (no events,
one slide, ...) is skipped with its reason in the summary, never failing the run.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lifelines.utils import concordance_index
from matplotlib.backends.backend_pdf import PdfPages

from sequoia_clinic.errors import SequoiaError
from sequoia_clinic.fileio import atomic_path, sha256_file, write_json_atomic
from sequoia_clinic.pipeline.cohort_plan import Plan
from sequoia_clinic.pipeline.cohort_store import CohortStore
from sequoia_clinic.pipeline.cohort_table import CohortTables, RowStatus
from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.plots import draw_km, new_figure
from sequoia_clinic.survival.stratify import StratifyResult, stratify, write_outputs

C_INDEX_BOOTSTRAP = 500
C_INDEX_SEED = 0
MAX_LISTED_FAILURES = 25
SURVIVAL_DIR = "survival"
WRAP_CHARS = 110  # characters per line of summary text on an A4 page


@dataclass(frozen=True)
class RowFailure:
    slide_id: str
    status: str
    error_class: str
    reason: str
    failed_attempts: int


@dataclass(frozen=True)
class SurvivalSummary:
    result: StratifyResult
    c_index_lower: float | None
    c_index_upper: float | None
    files: tuple[Path, ...]


@dataclass(frozen=True)
class CohortSummary:
    n: int
    counts: tuple[tuple[str, int], ...]  # (status, rows), every RowStatus
    qc_codes: tuple[tuple[str, int], ...]  # (QC code, ok slides carrying it)
    failures: tuple[RowFailure, ...]
    demo: bool  # some result came from an untrained bundle
    survival: SurvivalSummary | None
    survival_note: str | None  # why there is no survival analysis
    files: tuple[Path, ...]

    def count(self, status: RowStatus) -> int:
        return dict(self.counts)[status.value]

    def to_dict(self) -> dict[str, Any]:
        survival = None
        if self.survival is not None:
            survival = {
                "stratify": self.survival.result.to_dict() | {"curves": None},
                "c_index_bootstrap_95ci": [self.survival.c_index_lower, self.survival.c_index_upper],
                "files": [p.name for p in self.survival.files],
            }
        return {
            "n": self.n,
            "counts": dict(self.counts),
            "qc_codes": dict(self.qc_codes),
            "failures": [dataclasses.asdict(f) for f in self.failures],
            "demo": self.demo,
            "survival": survival,
            "survival_note": self.survival_note,
        }


def c_index_interval(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    n_boot: int = C_INDEX_BOOTSTRAP,
    seed: int = C_INDEX_SEED,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap 95% CI of Harrell's C (higher risk = shorter survival); None if not estimable."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        index = rng.integers(0, time.size, time.size)
        if not event[index].any():
            continue
        try:
            values.append(concordance_index(time[index], -risk[index], event[index]))
        except ZeroDivisionError:  # no comparable pairs in this resample
            continue
    if len(values) < n_boot // 2:
        return None, None
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def _survival(
    plan: Plan, frame: pd.DataFrame, store: CohortStore
) -> tuple[SurvivalSummary | None, str | None]:
    if not plan.has_outcomes or plan.time_unit is None:
        return None, "the manifest has no outcome columns (time, event)"
    rows = frame[(frame["status"] == RowStatus.OK.value) & frame["time"].notna() & frame["event"].notna()]
    if len(rows) < 2:
        return None, f"{len(rows)} scored slide(s) with an outcome: too few for survival figures"
    model_path = Path(plan.context.risk_model_path)
    if not model_path.is_file() or sha256_file(model_path) != plan.context.risk_model_sha256:
        return None, f"the risk model {model_path} is missing or changed since the run was planned"
    table = pd.DataFrame(
        {
            "time": rows["time"].astype(float).to_numpy(),
            "event": rows["event"].astype(int).to_numpy(),
            "linear_predictor": rows["linear_predictor"].astype(float).to_numpy(),
        }
    )
    try:
        result = stratify(
            table,
            time_col="time",
            event_col="event",
            time_unit=plan.time_unit.value,
            risk_col="linear_predictor",
            model=RiskModel.load(model_path),
            endpoint=plan.endpoint,
        )
    except SequoiaError as exc:
        return None, f"survival figures not made: {exc}"
    years = table["time"].to_numpy() / plan.time_unit.per_year
    lower, upper = c_index_interval(
        years, table["event"].to_numpy().astype(bool), table["linear_predictor"].to_numpy()
    )
    files = write_outputs(result, store.root / SURVIVAL_DIR)
    return SurvivalSummary(result, lower, upper, tuple(files)), None


def _failures(frame: pd.DataFrame) -> tuple[RowFailure, ...]:
    bad = frame[frame["status"].isin([RowStatus.FAILED.value, RowStatus.TIMEOUT.value])]
    return tuple(
        RowFailure(str(r.slide_id), str(r.status), str(r.error_class), str(r.reason), int(r.failed_attempts))
        for r in bad.itertuples()
    )


def summarise(plan: Plan, tables: CohortTables, store: CohortStore) -> CohortSummary:
    """Counts, QC and (with outcomes) the survival analysis; writes survival/, summary.json and the PDF."""
    frame = tables.frame
    status_counts = Counter(frame["status"])
    counts = tuple((s.value, int(status_counts.get(s.value, 0))) for s in RowStatus)
    codes: Counter[str] = Counter()
    for text in frame.loc[frame["status"] == RowStatus.OK.value, "qc_codes"]:
        codes.update(c for c in str(text).split(";") if c)
    demo = any(s.result is not None and not s.result.bundle_trained for s in tables.states)
    survival, note = _survival(plan, frame, store)
    summary = CohortSummary(
        n=len(frame),
        counts=counts,
        qc_codes=tuple(sorted(codes.items())),
        failures=_failures(frame),
        demo=demo,
        survival=survival,
        survival_note=note,
        files=(),
    )
    json_path = store.root / "summary.json"
    write_json_atomic(json_path, json.loads(json.dumps(summary.to_dict(), default=_jsonable)))
    pdf_path = store.root / "cohort_summary.pdf"
    write_summary_pdf(summary, frame, plan, pdf_path)
    extra = survival.files if survival is not None else ()
    return dataclasses.replace(summary, files=(json_path, pdf_path, *extra))


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


# ---- the summary PDF ---------------------------------------------------------------------------------
def _text_page(summary: CohortSummary, frame: pd.DataFrame, plan: Plan) -> Any:
    fig = new_figure(8.27, 11.69)
    lines = ["Cohort summary (research use only; not a diagnostic device)"]
    if summary.demo:
        lines.append("DEMONSTRATION - untrained demo bundle: every number here is meaningless")
    lines.append(f"manifest: {Path(plan.manifest).name}; {summary.n} slides")
    lines.append("status: " + ", ".join(f"{status} {n}" for status, n in summary.counts))
    lines.append(
        "QC warnings on scored slides: " + (", ".join(f"{c} {n}" for c, n in summary.qc_codes) or "none")
    )
    if summary.failures:
        lines.append(f"failures ({len(summary.failures)}):")
        for f in summary.failures[:MAX_LISTED_FAILURES]:
            lines.append(f"  {f.slide_id}: {f.status} ({f.error_class}) {f.reason}")
        if len(summary.failures) > MAX_LISTED_FAILURES:
            lines.append(f"  ... and {len(summary.failures) - MAX_LISTED_FAILURES} more (cohort.csv)")
    if summary.survival is None:
        lines.append(f"survival: {summary.survival_note}")
    y = 0.97
    for k, line in enumerate(lines):
        for part in [line] if k == 0 else textwrap.wrap(line, WRAP_CHARS, subsequent_indent="    "):
            fig.text(
                0.06, y, part, fontsize=11 if k == 0 else 8, weight="bold" if k == 0 else "normal", va="top"
            )
            y -= 0.022 if k == 0 else 0.017
    ax = fig.add_axes((0.12, 0.08, 0.8, max(0.15, min(0.35, y - 0.14))))
    scores = frame.loc[frame["status"] == RowStatus.OK.value, "risk_score"].astype(float)
    ax.hist(scores, bins=20, range=(0, 100), color="#7570b3", edgecolor="white")
    ax.set_xlabel("risk score (0-100 percentile in the risk model's calibration cohort)")
    ax.set_ylabel("slides")
    ax.set_title("Score distribution of the scored slides", fontsize=9)
    return fig


def _survival_page(survival: SurvivalSummary) -> Any:
    result = survival.result
    fig = new_figure(8.27, 11.69)
    ax = fig.add_axes((0.15, 0.55, 0.75, 0.38))
    p = f"log-rank p = {result.logrank.p_value:.3g}" if result.logrank else "one group"
    draw_km(ax, result.curves, result.endpoint, title=f"Kaplan-Meier by frozen risk group ({p})")
    c = result.c_index
    ci = (
        f" (bootstrap 95% CI {survival.c_index_lower:.3f}-{survival.c_index_upper:.3f})"
        if survival.c_index_lower is not None and survival.c_index_upper is not None
        else ""
    )
    lines = [
        f"n = {result.n}, events = {result.events}; {result.grouping}",
        f"Harrell's C of the {c.of}: {c.harrell_c:.3f}{ci}",
    ]
    for hr in result.hazard_ratios:
        if hr.hazard_ratio is None:
            lines.append(f"HR {hr.group} vs {hr.reference}: {hr.note}")
        else:
            lines.append(
                f"HR {hr.group} vs {hr.reference}: {hr.hazard_ratio:.2f} ({hr.lower:.2f}-{hr.upper:.2f})"
            )
    lines += list(result.notes)
    y = 0.28
    for line in lines:
        for part in textwrap.wrap(line, WRAP_CHARS, subsequent_indent="    "):
            fig.text(0.08, y, part, fontsize=7.5, va="top")
            y -= 0.016
    return fig


def write_summary_pdf(summary: CohortSummary, frame: pd.DataFrame, plan: Plan, target: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(target) as tmp:
        with PdfPages(tmp, metadata={"CreationDate": None}) as pdf:
            pages = [_text_page(summary, frame, plan)]
            if summary.survival is not None:
                pages.append(_survival_page(summary.survival))
            for fig in pages:
                pdf.savefig(fig)
                plt.close(fig)
