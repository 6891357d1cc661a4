"""Performance of out-of-fold predictions: discrimination, calibration and overall accuracy.

Discrimination (Harrell's C, Uno's C, cumulative/dynamic AUC) and the integrated Brier score come from
scikit-survival; the inverse-probability-of-censoring weights use the whole cohort's censoring
distribution. Two items are in neither library and are written here:

* calibration slope at t: the Cox coefficient of log(-log S_hat(t | x)) for the outcome censored at t
  (1 = ideal, < 1 = predictions too extreme, i.e. over-fitting);
* calibration-in-the-large at t: mean predicted risk 1 - S_hat(t | x) vs the Kaplan-Meier risk.

Confidence intervals are percentile bootstrap intervals over patients, resampling the out-of-fold
predictions of the CV repeats in turn (so they carry both test-sample and fold-split variability).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from sequoia_clinic.survival.records import MetricSummary, finite_or_none


@dataclass(frozen=True)
class OutOfFold:
    """One CV repeat: each patient's linear predictor and survival on ``grid`` from a model that never saw them."""

    lp: np.ndarray
    survival: np.ndarray  # patients x grid
    null_survival: np.ndarray  # patients x grid, Kaplan-Meier of the fold's training part
    groups: np.ndarray
    grid: np.ndarray


@dataclass(frozen=True)
class MetricPlan:
    """Which metrics at which times (years); set from the cohort's follow-up."""

    horizons: tuple[float, ...]  # td-AUC
    calibration_horizons: tuple[float, ...]
    ibs_times: tuple[float, ...]
    tau: float  # Uno's C truncation time


def _km_risk(time: np.ndarray, event: np.ndarray, horizon: float) -> float:
    times, surv = kaplan_meier_estimator(event, time)
    index = np.searchsorted(times, horizon, side="right") - 1
    return float(1.0 - (surv[index] if index >= 0 else 1.0))


def calibration_slope(time: np.ndarray, event: np.ndarray, surv_t: np.ndarray, horizon: float) -> float:
    """Cox coefficient of log(-log S_hat(t)) with follow-up administratively censored at t."""
    x = np.log(-np.log(np.clip(surv_t, 1e-12, 1 - 1e-12)))
    cut_event = event & (time <= horizon)
    cut_time = np.minimum(time, horizon)
    model = CoxPHSurvivalAnalysis(alpha=0.0, ties="breslow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x[:, None], Surv.from_arrays(cut_event, cut_time))
    return float(model.coef_[0])


def _grid_column(grid: np.ndarray, t: float) -> int:
    return int(np.flatnonzero(np.isclose(grid, t))[0])


def _safe(func: Callable[[], float]) -> float:
    """NaN where a metric is undefined on a (bootstrap) sample, e.g. no event before t."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(func())
    except (ValueError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError):
        return float("nan")


def _auc_at(y_censoring: np.ndarray, y_test: np.ndarray, lp: np.ndarray, horizon: float) -> float:
    return float(cumulative_dynamic_auc(y_censoring, y_test, lp, [horizon])[0][0])


def evaluate(
    time: np.ndarray,
    event: np.ndarray,
    oof: OutOfFold,
    plan: MetricPlan,
    y_censoring: np.ndarray,
    index: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of one set of out-of-fold predictions (optionally a bootstrap resample ``index``)."""
    if index is None:
        index = np.arange(time.size)
    t, e, lp = time[index], event[index], oof.lp[index]
    surv, null = oof.survival[index], oof.null_survival[index]
    y_test = Surv.from_arrays(e, t)
    out: dict[str, float] = {
        "harrell_c": _safe(lambda: concordance_index_censored(e, t, lp)[0]),
        "uno_c": _safe(lambda: concordance_index_ipcw(y_censoring, y_test, lp, tau=plan.tau)[0]),
    }
    for h in plan.horizons:
        out[f"auc_{h:g}y"] = _safe(partial(_auc_at, y_censoring, y_test, lp, h))
    ibs_cols = [_grid_column(oof.grid, s) for s in plan.ibs_times]
    times = np.asarray(plan.ibs_times)
    out["ibs"] = _safe(lambda: integrated_brier_score(y_censoring, y_test, surv[:, ibs_cols], times))
    out["ibs_null_km"] = _safe(lambda: integrated_brier_score(y_censoring, y_test, null[:, ibs_cols], times))
    for h in plan.calibration_horizons:
        s_h = surv[:, _grid_column(oof.grid, h)]
        out[f"calibration_slope_{h:g}y"] = _safe(partial(calibration_slope, t, e, s_h, h))
        predicted = float(np.mean(1.0 - s_h))
        observed = _safe(partial(_km_risk, t, e, h))
        out[f"predicted_risk_{h:g}y"] = predicted
        out[f"observed_risk_{h:g}y"] = observed
        out[f"calibration_in_the_large_{h:g}y"] = predicted - observed
    return out


def summarise(
    time: np.ndarray,
    event: np.ndarray,
    repeats: Sequence[OutOfFold],
    plan: MetricPlan,
    n_bootstrap: int,
    seed: int,
) -> tuple[tuple[str, MetricSummary], ...]:
    """Per metric (by name, in the order computed): mean, SD, min and max over CV repeats, bootstrap 95% CI."""
    y_censoring = Surv.from_arrays(event, time)
    per_repeat = [evaluate(time, event, oof, plan, y_censoring) for oof in repeats]
    rng = np.random.default_rng(seed)
    boot = []
    for b in range(n_bootstrap):
        index = rng.integers(0, time.size, time.size)
        boot.append(evaluate(time, event, repeats[b % len(repeats)], plan, y_censoring, index))
    result = []
    for name in per_repeat[0]:
        values = np.array([r[name] for r in per_repeat])
        draws = np.array([r[name] for r in boot])
        draws = draws[np.isfinite(draws)]
        defined = bool(np.isfinite(values).any())
        summary = MetricSummary(
            mean=finite_or_none(np.nanmean(values)) if defined else None,
            sd_over_repeats=finite_or_none(np.nanstd(values)) if defined else None,
            min_over_repeats=finite_or_none(np.nanmin(values)) if defined else None,
            max_over_repeats=finite_or_none(np.nanmax(values)) if defined else None,
            per_repeat=tuple(finite_or_none(v) for v in values),
            ci_lower=finite_or_none(np.percentile(draws, 2.5)) if draws.size else None,
            ci_upper=finite_or_none(np.percentile(draws, 97.5)) if draws.size else None,
            bootstrap_valid=int(draws.size),
        )
        result.append((name, summary))
    return tuple(result)
