"""Cohort stratification: Kaplan-Meier curves per risk group, log-rank tests, hazard ratios vs the lowest
group and the C-index of the continuous score, written as figures (PNG + PDF), CSVs and JSON.

Groups come from (a) a group column, (b) a continuous risk column cut by user cut-offs or a quantile
split (exploratory: sample-dependent), or (c) a risk model: its linear predictor (computed from the
table's gene columns, or read from the risk column) cut at the model's frozen cut-offs.

:func:`stratify` analyses a table already read; :func:`stratify_table` is the whole ``stratify`` run of a
:class:`StratifyRequest` (check, read the table and model, analyse, write every output atomically).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lifelines.utils import concordance_index

from sequoia_clinic.errors import OptionError, TableError
from sequoia_clinic.fileio import (
    ColumnType,
    atomic_dir,
    csv_safe_cell,
    header_frame,
    merge_column_types,
    read_table_columns,
    read_table_header,
    table_format,
)
from sequoia_clinic.survival import cohort as cohort_io
from sequoia_clinic.survival.clinical import encode_with_specs
from sequoia_clinic.survival.cohort import check_time_unit
from sequoia_clinic.survival.cutoffs import QUANTILE_METHODS, CutoffSpec, assign_groups
from sequoia_clinic.survival.km import (
    display_limit,
    hazard_ratios_vs_reference,
    km_summary,
    logrank,
    pairwise_logrank,
    tick_times,
)
from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.plots import draw_km, new_figure, render_figure
from sequoia_clinic.survival.records import (
    HazardRatio,
    KMGroupCurve,
    LogRankTest,
    PairwiseLogRank,
    jsonable,
)

KNOWN_ORDERS = (
    ("low", "intermediate", "high"),
    ("low", "low-intermediate", "high-intermediate", "high"),
    ("low", "medium", "high"),
    ("low", "high"),
)
HORIZONS = (3.0, 5.0, 10.0)
MAX_GROUPS = 20  # a group column with more distinct values is probably an ID column
# --model --risk-col takes the model's linear predictor; a column of 0-100 values spreading over more than
# this many times the training linear predictor's range is taken to be the 0-100 score instead, refused
SCORE_SPREAD_FACTOR = 10.0


@dataclass(frozen=True)
class CIndex:
    """Harrell's C of the continuous score (or the group order) and what it was computed of."""

    harrell_c: float
    of: str

    def to_dict(self) -> dict[str, Any]:
        return {"harrell_c": self.harrell_c, "of": self.of}


@dataclass(frozen=True)
class StratifyResult:
    """Everything ``stratify`` reports (times in years)."""

    endpoint: str
    grouping: str
    order: tuple[str, ...]
    n: int
    events: int
    curves: tuple[KMGroupCurve, ...]
    logrank: LogRankTest | None  # None with a single group
    pairwise: tuple[PairwiseLogRank, ...]
    hazard_ratios: tuple[HazardRatio, ...]
    c_index: CIndex
    display_limit_years: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "grouping": self.grouping,
            "group_order": list(self.order),
            "n": self.n,
            "events": self.events,
            "logrank": None if self.logrank is None else self.logrank.to_dict(),
            "pairwise_logrank": [p.to_dict() for p in self.pairwise],
            "hazard_ratios_vs_lowest": [h.to_dict() for h in self.hazard_ratios],
            "c_index": self.c_index.to_dict(),
            "display_limit_years": self.display_limit_years,
            "notes": list(self.notes),
            "curves": [c.to_dict() for c in self.curves],
        }


@dataclass(frozen=True)
class StratifyRequest:
    """One ``stratify`` run: the cohort table, one way of grouping it, and the output folder."""

    table: Path  # CSV or Parquet, one row per patient
    out_dir: Path
    time_col: str
    event_col: str
    time_unit: str = "years"  # days, months or years
    risk_col: str | None = None  # continuous score (higher = worse); with model: its linear predictor
    group_col: str | None = None
    model: Path | None = None  # a risk-model JSON: its frozen cut-offs
    cutoffs: CutoffSpec | None = None  # for risk_col without a model; None: tertiles
    group_order: tuple[str, ...] = ()  # group_col values, lowest risk first; () = inferred
    endpoint: str = "event"


@dataclass(frozen=True)
class StratifyOutcome:
    """The analysis and the files written into the output folder."""

    result: StratifyResult
    files: tuple[Path, ...]


def infer_order(labels: Sequence[str] | np.ndarray, given: Sequence[str] | None = None) -> tuple[str, ...]:
    """Group order (lowest risk first): given, a known vocabulary, numeric, or alphabetical."""
    present = sorted(set(labels))
    if given:
        unknown = sorted(set(present) - set(given))
        if unknown:  # counts only: the values themselves could identify patients
            raise OptionError(
                f"lacks {len(unknown)} of the {len(present)} group(s) in the group column",
                fix="List every value of the group column, lowest risk first.",
                option="group_order",
            )
        return tuple(g for g in given if g in present)
    for vocabulary in KNOWN_ORDERS:
        lowered = {p.lower(): p for p in present}
        if set(lowered) <= set(vocabulary) and len(lowered) == len(present):
            return tuple(lowered[v] for v in vocabulary if v in lowered)
    try:
        return tuple(sorted(present, key=float))
    except ValueError:
        return tuple(present)


def _risk_values(frame: pd.DataFrame, column: str, path: Path | None) -> np.ndarray:
    cohort_io.require_columns(frame, [column], path, "risk column")
    return cohort_io.numeric_block(frame, [column], path, "risk column")[:, 0]


def _model_risk_values(frame: pd.DataFrame, column: str, model: RiskModel, path: Path | None) -> np.ndarray:
    """``--risk-col`` with ``--model``: the model's linear predictor; a 0-100 score column is refused."""
    values = _risk_values(frame, column, path)
    lp_range = model.training_lp[-1] - model.training_lp[0]
    spread = float(values.max() - values.min())
    if values.min() >= 0 and values.max() <= 100 and spread > SCORE_SPREAD_FACTOR * lp_range:
        raise TableError(
            f"risk column '{column}' looks like the 0-100 score, not the model's linear predictor "
            f"(its values span {spread:.3g}, over {SCORE_SPREAD_FACTOR:g}x the training linear "
            f"predictor's span {lp_range:.3g})",
            path,
            "Pass the linear predictor (linear_predictor in result.json), or drop --risk-col to compute it "
            "from the table's gene columns.",
        )
    return values


def _group_labels(frame: pd.DataFrame, column: str, path: Path | None) -> np.ndarray:
    cohort_io.require_columns(frame, [column], path, "group column")
    raw = frame[column]
    if raw.isna().any():
        raise TableError(
            f"group column '{column}' has {int(raw.isna().sum())} empty value(s)",
            path,
            "Give every patient a group.",
        )
    labels = raw.astype(str).str.strip().to_numpy()
    distinct = len(set(labels))
    if distinct > MAX_GROUPS:
        raise TableError(
            f"group column '{column}' has {distinct} distinct values (at most {MAX_GROUPS}); "
            "it looks like an ID or a continuous column",
            path,
            "Pass a column of risk groups, or a continuous score with --risk-col.",
        )
    return labels


def _model_lp(frame: pd.DataFrame, model: RiskModel, path: Path | None) -> np.ndarray:
    columns = cohort_io.gene_columns(frame, model.genes, path)
    if model.clinical:  # typed covariates: encoded as at calibration (levels, indicators)
        genes = cohort_io.numeric_block(frame, [columns[g] for g in model.genes], path, "model input")
        return model.linear_predictor(np.hstack([genes, encode_with_specs(frame, model.clinical, path)]))
    cohort_io.require_columns(frame, list(model.covariates), path, "covariate column")
    values = cohort_io.numeric_block(
        frame, [columns[g] for g in model.genes] + list(model.covariates), path, "model input"
    )
    return model.linear_predictor(values)


def _concordance(time: np.ndarray, score: np.ndarray, event: np.ndarray, path: Path | None) -> float:
    """Harrell's C of ``score`` (higher = worse); a table with no comparable pair is a TableError."""
    try:
        return float(concordance_index(time, -score, event))
    except ZeroDivisionError:  # lifelines: "No admissable pairs" (one row, or no event before a later time)
        raise TableError(
            "the table has no pair of patients whose survival can be compared (too few rows or events)",
            path,
            "Give a cohort with several patients and at least one event.",
        ) from None


def stratify(
    frame: pd.DataFrame,
    *,
    time_col: str,
    event_col: str,
    time_unit: str = "years",
    risk_col: str | None = None,
    group_col: str | None = None,
    model: RiskModel | None = None,
    cutoffs: CutoffSpec | None = None,
    group_order: Sequence[str] | None = None,
    endpoint: str = "event",
    path: Path | None = None,
) -> StratifyResult:
    """Stratify a cohort table into risk groups and compare their survival."""
    check_grouping(group_col, risk_col, model is not None)
    survival = cohort_io.survival_data(frame, time_col, event_col, time_unit, path, min_events=1)
    time, event = survival.time, survival.event
    score: np.ndarray | None
    quantile_split = False
    if group_col:
        labels = _group_labels(frame, group_col, path)
        order = infer_order(labels, group_order)
        score = np.array([order.index(v) for v in labels], dtype=float)
        grouping = f"groups from column '{group_col}' (order: {', '.join(order)})"
        c_source = "group order (ordinal)"
    else:
        if model is not None:
            score = (
                _model_risk_values(frame, risk_col, model, path)
                if risk_col
                else _model_lp(frame, model, path)
            )
            cut, names = model.cutoffs, model.group_names
            grouping = f"risk model '{model.signature}': frozen cut-offs ({model.groups.description})"
            c_source = f"linear predictor of model '{model.signature}'"
        else:
            spec = cutoffs or CutoffSpec("tertiles")
            if spec.method == "user" and spec.scale != "lp":
                raise OptionError(
                    "without a risk model, cut-offs apply to the risk column's own scale",
                    fix="Drop the cut-off scale.",
                    option="cutoff_scale",
                )
            assert risk_col is not None  # check_grouping: neither a group column nor a model
            score = _risk_values(frame, risk_col, path)
            quantiles = () if spec.method == "user" else QUANTILE_METHODS[spec.method]
            cut = (
                spec.values
                if spec.method == "user"
                else tuple(float(np.quantile(score, q)) for q in quantiles)
            )
            names = spec.group_names()
            quantile_split = spec.method != "user"
            source = (
                "pre-specified by the user"
                if spec.method == "user"
                else f"{spec.method} of this cohort: exploratory"
            )
            grouping = f"column '{risk_col}' cut at {', '.join(f'{c:.4g}' for c in cut)} ({source})"
            c_source = f"column '{risk_col}'"
        index = assign_groups(score, tuple(cut))
        labels = np.array([names[i] for i in index])
        order = tuple(n for n in names if (labels == n).any())
    limit = display_limit(time)
    ticks = tick_times(limit)
    curves = tuple(km_summary(time[labels == g], event[labels == g], g, ticks, HORIZONS) for g in order)
    several = len(order) > 1
    hazard_ratios = hazard_ratios_vs_reference(time, event, labels, order)
    return StratifyResult(
        endpoint=endpoint,
        grouping=grouping,
        order=order,
        n=survival.n,
        events=survival.n_events,
        curves=curves,
        logrank=logrank(time, event, labels) if several else None,
        pairwise=pairwise_logrank(time, event, labels) if several else (),
        hazard_ratios=hazard_ratios,
        c_index=CIndex(_concordance(time, score, event, path), c_source),
        display_limit_years=limit,
        notes=(
            *_notes(model, quantile_split),
            *(
                f"hazard ratio of '{hr.group}' vs '{hr.reference}' {hr.note}"
                for hr in hazard_ratios
                if hr.note is not None
            ),
        ),
    )


def check_grouping(group_col: str | None, risk_col: str | None, has_model: bool) -> None:
    """Exactly one way of grouping: a group column, or a risk column and/or a risk model."""
    if group_col and (risk_col or has_model):
        raise OptionError(
            "cannot be combined with a risk column or a risk model",
            fix="Pass one way of grouping.",
            option="group_col",
        )
    if not (group_col or risk_col or has_model):
        raise OptionError("no grouping given", fix="Pass a risk column, a group column or a risk model.")


def _notes(model: RiskModel | None, quantile_split: bool) -> list[str]:
    notes = [
        "hazard ratios from a Cox model on group indicators (lifelines, Efron ties, Wald 95% CI)",
        "pairwise log-rank p-values are not adjusted for multiple comparisons",
    ]
    if model is not None:
        notes.append(
            "if this table is the model's calibration cohort, these figures are apparent (optimistic); "
            "the model file holds the cross-validated ones"
        )
    if quantile_split:
        notes.append("quantile cut-offs are sample-dependent: exploratory only")
    return notes


def _csv(rows: list[dict[str, object]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writerow({column: csv_safe_cell(column) for column in columns})
    writer.writerows({key: csv_safe_cell(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def figures_rows(result: StratifyResult) -> list[dict[str, object]]:
    """Every number of the analysis as long-format CSV rows (section, group, comparison, statistic, value, CI, p)."""
    rows: list[dict[str, object]] = [
        {"section": "cohort", "statistic": "n", "value": result.n},
        {"section": "cohort", "statistic": "events", "value": result.events},
        {
            "section": "c_index",
            "statistic": f"harrell_c of {result.c_index.of}",
            "value": result.c_index.harrell_c,
        },
    ]
    for curve in result.curves:
        rows.append({"section": "group", "group": curve.label, "statistic": "n", "value": curve.n})
        rows.append({"section": "group", "group": curve.label, "statistic": "events", "value": curve.events})
        for h in curve.at_horizons:
            rows.append(
                {
                    "section": "group",
                    "group": curve.label,
                    "statistic": f"km_survival_{h.time:g}y",
                    "value": h.survival,
                    "lower": h.lower,
                    "upper": h.upper,
                }
            )
    if result.logrank:
        rows.append(
            {
                "section": "logrank",
                "statistic": f"chi2 ({result.logrank.degrees_of_freedom} df)",
                "value": result.logrank.test_statistic,
                "p_value": result.logrank.p_value,
            }
        )
    for pair in result.pairwise:
        rows.append(
            {
                "section": "pairwise_logrank",
                "comparison": f"{pair.group_a} vs {pair.group_b}",
                "statistic": "chi2 (1 df)",
                "value": pair.test_statistic,
                "p_value": pair.p_value,
            }
        )
    for hr in result.hazard_ratios:
        rows.append(
            {
                "section": "hazard_ratio",
                "group": hr.group,
                "comparison": f"{hr.group} vs {hr.reference}",
                "statistic": "hazard_ratio",
                "value": hr.hazard_ratio,
                "lower": hr.lower,
                "upper": hr.upper,
                "p_value": hr.p_value,
            }
        )
    return rows


def km_figure(result: StratifyResult) -> dict[str, bytes]:
    fig = new_figure(7.0, 5.6)
    ax = fig.add_axes((0.2, 0.36, 0.75, 0.56))
    p = f"log-rank p = {result.logrank.p_value:.2g}" if result.logrank else "one group"
    draw_km(ax, result.curves, result.endpoint, title=f"Kaplan-Meier by risk group ({p}; 95% CI bands)")
    return render_figure(fig)


def write_outputs(result: StratifyResult, out_dir: Path) -> list[Path]:
    """Write km.png, km.pdf, km_curves.csv, at_risk.csv, stratify_figures.csv and stratify.json atomically."""
    figure = km_figure(result)
    curve_rows = [
        {"group": c.label, "time_years": t, "survival": s, "lower": lo, "upper": hi}
        for c in result.curves
        for t, s, lo, hi in zip(c.times, c.survival, c.lower, c.upper, strict=True)
    ]
    risk_rows = [
        {"group": c.label, "time_years": t, "at_risk": n, "cumulative_events": e}
        for c in result.curves
        for t, n, e in zip(c.ticks, c.at_risk, c.cumulative_events, strict=True)
    ]
    files = {
        "km.png": figure["png"],
        "km.pdf": figure["pdf"],
        "km_curves.csv": _csv(curve_rows, ["group", "time_years", "survival", "lower", "upper"]).encode(),
        "at_risk.csv": _csv(risk_rows, ["group", "time_years", "at_risk", "cumulative_events"]).encode(),
        "stratify_figures.csv": _csv(
            figures_rows(result),
            ["section", "group", "comparison", "statistic", "value", "lower", "upper", "p_value"],
        ).encode(),
        "stratify.json": (json.dumps(jsonable(result.to_dict()), indent=2, allow_nan=False) + "\n").encode(),
    }
    with atomic_dir(out_dir) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return [Path(out_dir) / name for name in files]


def table_columns(
    request: StratifyRequest, model: RiskModel | None, header: tuple[str, ...]
) -> dict[str, ColumnType]:
    """The columns ``stratify`` reads, typed; only these are parsed. A missing one is a TableError.

    Time (number) and event (text); then the group column (text), or the risk column (number), or, with a
    model and no risk column, the model's gene columns (numbers) and covariate columns (text for typed
    clinical covariates, numbers for an older model's numeric ones).
    """
    frame, path = header_frame(header), request.table
    cohort_io.require_columns(frame, [request.time_col, request.event_col], path)
    plans = [{request.time_col: ColumnType.NUMBER, request.event_col: ColumnType.TEXT}]
    if request.group_col:
        cohort_io.require_columns(frame, [request.group_col], path, "group column")
        plans.append({request.group_col: ColumnType.TEXT})
    elif request.risk_col:
        cohort_io.require_columns(frame, [request.risk_col], path, "risk column")
        plans.append({request.risk_col: ColumnType.NUMBER})
    elif model is not None:
        genes = cohort_io.gene_columns(frame, model.genes, path)
        covariates = [spec.column for spec in model.clinical] if model.clinical else list(model.covariates)
        cohort_io.require_columns(frame, covariates, path, "covariate column")
        kind = ColumnType.TEXT if model.clinical else ColumnType.NUMBER
        plans += [dict.fromkeys(genes.values(), ColumnType.NUMBER), dict.fromkeys(covariates, kind)]
    return merge_column_types(*plans)


def stratify_table(request: StratifyRequest) -> StratifyOutcome:
    """The whole ``stratify`` run: check the request, read the table (and model), analyse, write outputs."""
    check_time_unit(request.time_unit)
    check_grouping(request.group_col, request.risk_col, request.model is not None)
    if request.out_dir.exists() and not request.out_dir.is_dir():
        raise OptionError(
            f"{request.out_dir} exists and is not a folder", fix="Pass a folder path.", option="out_dir"
        )
    if request.model is not None and request.cutoffs is not None:
        raise OptionError(
            "do not apply with a risk model: it has frozen cut-offs",
            fix="Drop the cut-offs, the quantile split and the group names.",
            option="cutoffs",
        )
    model = RiskModel.load(request.model) if request.model is not None else None
    fmt = table_format(request.table)
    header = read_table_header(fmt)
    frame = read_table_columns(fmt, table_columns(request, model, header), header)
    result = stratify(
        frame,
        time_col=request.time_col,
        event_col=request.event_col,
        time_unit=request.time_unit,
        risk_col=request.risk_col,
        group_col=request.group_col,
        model=model,
        cutoffs=request.cutoffs,
        group_order=request.group_order or None,
        endpoint=request.endpoint,
        path=request.table,
    )
    return StratifyOutcome(result, tuple(write_outputs(result, request.out_dir)))
