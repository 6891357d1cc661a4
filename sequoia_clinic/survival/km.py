"""Kaplan-Meier curves, log-rank tests and group hazard ratios (all computed by lifelines).

Curves are summarised as :class:`~sequoia_clinic.survival.records.KMGroupCurve` records (JSON via
``to_dict``) so that a report can draw them without the original data: step times, survival, 95% CI
(Greenwood, log-log, lifelines' default), and at-risk / cumulative event counts at tick times. Hazard ratios vs the lowest group come from a Cox model on 0/1 group indicators
(Efron ties, lifelines' only choice), with Wald 95% CIs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test, pairwise_logrank_test

from sequoia_clinic.survival.records import (
    HazardRatio,
    KMGroupCurve,
    KMPoint,
    LogRankTest,
    PairwiseLogRank,
)


def km_fitter(time: np.ndarray, event: np.ndarray, label: str) -> KaplanMeierFitter:
    return KaplanMeierFitter().fit(time, event, label=label)


def km_at(fitter: KaplanMeierFitter, horizon: float) -> KMPoint:
    """KM survival and 95% CI at a horizon (None beyond the last follow-up)."""
    if horizon > float(fitter.durations.max()):
        return KMPoint(horizon, None, None, None)
    ci = fitter.confidence_interval_survival_function_
    index = int(np.searchsorted(fitter.timeline, horizon, side="right") - 1)
    return KMPoint(
        time=horizon,
        survival=float(fitter.survival_function_.iloc[index, 0]),
        lower=float(ci.iloc[index, 0]),
        upper=float(ci.iloc[index, 1]),
    )


def counts_at(time: np.ndarray, event: np.ndarray, ticks: Sequence[float]) -> tuple[list[int], list[int]]:
    """Number at risk (time >= tick) and cumulative events (event time <= tick) at each tick."""
    at_risk = [int((time >= t).sum()) for t in ticks]
    events = [int(((time <= t) & event).sum()) for t in ticks]
    return at_risk, events


def km_summary(
    time: np.ndarray, event: np.ndarray, label: str, ticks: Sequence[float], horizons: Sequence[float]
) -> KMGroupCurve:
    """A KM curve with CIs, counts at ticks and survival at horizons."""
    fitter = km_fitter(time, event, label)
    ci = fitter.confidence_interval_survival_function_
    at_risk, events = counts_at(time, event, ticks)
    return KMGroupCurve(
        label=label,
        n=int(time.size),
        events=int(event.sum()),
        times=tuple(float(t) for t in fitter.timeline),
        survival=tuple(float(s) for s in fitter.survival_function_.iloc[:, 0]),
        lower=tuple(float(s) for s in ci.iloc[:, 0]),
        upper=tuple(float(s) for s in ci.iloc[:, 1]),
        ticks=tuple(float(t) for t in ticks),
        at_risk=tuple(at_risk),
        cumulative_events=tuple(events),
        at_horizons=tuple(km_at(fitter, h) for h in horizons),
    )


def logrank(time: np.ndarray, event: np.ndarray, labels: np.ndarray) -> LogRankTest:
    """Multivariate (k-group) log-rank test."""
    result = multivariate_logrank_test(time, labels, event)
    return LogRankTest(
        test_statistic=float(result.test_statistic),
        degrees_of_freedom=int(result.degrees_of_freedom),
        p_value=float(result.p_value),
    )


def pairwise_logrank(time: np.ndarray, event: np.ndarray, labels: np.ndarray) -> tuple[PairwiseLogRank, ...]:
    """Log-rank test of every pair of groups (unadjusted p-values)."""
    result = pairwise_logrank_test(time, labels, event)
    return tuple(
        PairwiseLogRank(
            group_a=str(a),
            group_b=str(b),
            test_statistic=float(row["test_statistic"]),
            p_value=float(row["p"]),
        )
        for (a, b), row in result.summary.iterrows()
    )


def hazard_ratios_vs_reference(
    time: np.ndarray, event: np.ndarray, labels: np.ndarray, order: Sequence[str]
) -> tuple[HazardRatio, ...]:
    """HR (95% CI) of each group vs the first group of ``order``, from one Cox model on indicators.

    An HR is not estimable (null, with a note) when its group or the reference has no events (the
    maximum-likelihood estimate is 0 or infinite) or when the Cox fit fails. Groups without events are
    left out of the fit: that is the limit of the full fit as their coefficients go to minus infinity,
    so the other groups' HRs are unchanged.
    """
    reference, others = order[0], [g for g in order[1:] if (labels == g).any()]
    if not others:
        return ()
    events = {g: int(event[labels == g].sum()) for g in [reference, *others]}
    if events[reference] == 0:
        return tuple(
            _not_estimable(g, reference, f"reference group '{reference}' has no events") for g in others
        )
    fitted = [g for g in others if events[g] > 0]
    rows = {g: _not_estimable(g, reference, f"group '{g}' has no events") for g in others if events[g] == 0}
    if fitted:
        keep = np.isin(labels, [reference, *fitted])
        frame = pd.DataFrame({f"g{i}": (labels[keep] == g).astype(float) for i, g in enumerate(fitted)})
        frame["time"], frame["event"] = time[keep], event[keep].astype(int)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                summary = CoxPHFitter().fit(frame, duration_col="time", event_col="event").summary
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            summary = None
        for i, group in enumerate(fitted):
            if summary is None:
                rows[group] = _not_estimable(group, reference, "the Cox fit did not converge")
                continue
            row = summary.loc[f"g{i}"]
            rows[group] = HazardRatio(
                group=str(group),
                reference=str(reference),
                hazard_ratio=float(row["exp(coef)"]),
                lower=float(row["exp(coef) lower 95%"]),
                upper=float(row["exp(coef) upper 95%"]),
                p_value=float(row["p"]),
            )
    return tuple(rows[g] for g in others)


def _not_estimable(group: str, reference: str, reason: str) -> HazardRatio:
    return HazardRatio(str(group), str(reference), None, None, None, None, note=f"not estimable: {reason}")


def tick_times(max_time: float, step: float | None = None) -> list[float]:
    """Readable tick times from 0 up to ``max_time`` (years), at most about 6 of them."""
    if step is None:
        step = next((s for s in (1.0, 2.0, 5.0, 10.0) if max_time / s <= 5.5), 20.0)
    return [float(t) for t in np.arange(0.0, max_time + 1e-9, step)]


def display_limit(time: np.ndarray, min_at_risk: int = 10, fraction: float = 0.1) -> float:
    """Time after which too few patients remain to draw a curve (at risk below max(10, 10% n))."""
    threshold = max(min_at_risk, int(np.ceil(fraction * time.size)))
    ordered = np.sort(time)[::-1]
    return float(ordered[min(threshold, time.size) - 1])
