"""Cox fitting pieces against lifelines: unpenalised coefficients, Breslow baseline, partial likelihood,
calibration slope, cut-offs and table validation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError
from sklearn.model_selection import StratifiedKFold

from sequoia_clinic.errors import OptionError, RiskModelError, TableError
from sequoia_clinic.settings import RiskSettings
from sequoia_clinic.signatures.registry import Signature
from sequoia_clinic.survival import cox as cox_module
from sequoia_clinic.survival import fit as fit_module
from sequoia_clinic.survival.cohort import parse_event, survival_data
from sequoia_clinic.survival.cox import (
    PenaltyOptions,
    coxnet_path,
    fit_cox,
    partial_log_likelihood,
    standardisation,
)
from sequoia_clinic.survival.cutoffs import CutoffSpec, assign_groups, resolve_cutoffs
from sequoia_clinic.survival.fit import cv_repeat, fit_risk_model
from sequoia_clinic.survival.km import hazard_ratios_vs_reference
from sequoia_clinic.survival.metrics import calibration_slope

PROBES = {
    "GOLM1": "X217771_at",
    "YIF1A": "X202418_at",
    "CBX3": "X201091_s_at",
    "PLK1": "X202240_at",
    "FEN1": "X204768_s_at",
}


@pytest.fixture(scope="module")
def small_cohort(gse7390_table: pd.DataFrame) -> pd.DataFrame:
    """GSE7390 DMFS with five one-probe wang76 genes (gene = its probe); time in years."""
    return gse7390_table[list(PROBES)].assign(
        time=gse7390_table["time_days"] / 365.25, event=gse7390_table["dmfs_event"]
    )


def five_gene_signature() -> Signature:
    return Signature("five", tuple(PROBES), None, (), "test", "five wang76 genes")


def lifelines_fit(frame: pd.DataFrame) -> CoxPHFitter:
    """lifelines on the same population-SD standardised genes (its own centring is then a no-op)."""
    genes = list(PROBES)
    standard = (frame[genes] - frame[genes].mean()) / frame[genes].std(ddof=0)
    standard[["time", "event"]] = frame[["time", "event"]]
    return CoxPHFitter(baseline_estimation_method="breslow").fit(standard, "time", "event")


def test_unpenalised_model_matches_lifelines(small_cohort: pd.DataFrame) -> None:
    # Breslow (ours) and Efron (lifelines) coincide when no two events share a time: check that first
    event_times = small_cohort.loc[small_cohort["event"] == 1, "time"]
    assert not event_times.duplicated().any()
    settings = RiskSettings(
        penalty=0.0, cv_repeats=1, outer_folds=3, n_bootstrap_metrics=10, n_bootstrap_fit=10
    )
    model = fit_risk_model(
        small_cohort,
        five_gene_signature(),
        time_col="time",
        event_col="event",
        time_unit="years",
        settings=settings,
    )
    reference = lifelines_fit(small_cohort)
    np.testing.assert_allclose(model.coefficients, reference.params_[list(PROBES)].to_numpy(), atol=1e-4)
    baseline = reference.baseline_survival_.iloc[:, 0]
    ours = [model.baseline_survival_at(t) for t in baseline.index]
    np.testing.assert_allclose(ours, baseline.to_numpy(), atol=1e-4)
    # predicted survival of individual patients also agrees
    x = small_cohort[list(PROBES)].to_numpy()[:5]
    lp = model.linear_predictor(x)
    standard = (small_cohort[list(PROBES)] - small_cohort[list(PROBES)].mean()) / small_cohort[
        list(PROBES)
    ].std(ddof=0)
    expected = reference.predict_survival_function(standard.iloc[:5], times=[5.0]).to_numpy()[0]
    np.testing.assert_allclose(
        [model.baseline_survival_at(5.0) ** np.exp(v) for v in lp], expected, atol=1e-4
    )


def test_partial_likelihood_matches_lifelines(small_cohort: pd.DataFrame) -> None:
    reference = lifelines_fit(small_cohort)
    x = small_cohort[list(PROBES)].to_numpy()
    mean, sd = standardisation(x)
    lp = ((x - mean) / sd) @ reference.params_[list(PROBES)].to_numpy()
    value = partial_log_likelihood(
        lp, small_cohort["time"].to_numpy(), small_cohort["event"].to_numpy().astype(bool)
    )
    assert value == pytest.approx(reference.log_likelihood_, abs=1e-6)


def test_partial_likelihood_breslow_ties_by_hand() -> None:
    # times 1,1(both events),2(event),3: Breslow risk sets {all 4} twice, then {t>=2}
    time = np.array([1.0, 1.0, 2.0, 3.0])
    event = np.array([True, True, True, False])
    lp = np.array([0.1, -0.2, 0.3, 0.0])
    denom_all = np.log(np.exp(lp).sum())
    expected = (0.1 - denom_all) + (-0.2 - denom_all) + (0.3 - np.log(np.exp(lp[2:]).sum()))
    assert partial_log_likelihood(lp, time, event) == pytest.approx(expected)


def test_penalised_fit_shrinks_and_baseline_never_increases(small_cohort: pd.DataFrame) -> None:
    x = small_cohort[list(PROBES)].to_numpy()
    mean, sd = standardisation(x)
    z = (x - mean) / sd
    time, event = small_cohort["time"].to_numpy(), small_cohort["event"].to_numpy().astype(bool)
    unpenalised = fit_cox(z, time, event, PenaltyOptions(alpha=0.0), seed=0)
    chosen = fit_cox(z, time, event, PenaltyOptions(), seed=0)
    assert chosen.alpha > 0 and np.abs(chosen.coef).sum() < np.abs(unpenalised.coef).sum()
    assert chosen.cv_partial_loglik is not None and np.argmax(chosen.cv_partial_loglik) == list(
        chosen.alpha_path
    ).index(chosen.alpha)
    for fit in (unpenalised, chosen):
        assert np.all(np.diff(fit.baseline_survival) <= 1e-15)
        assert 0 < fit.baseline_survival[-1] < 1


def test_calibration_slope_is_the_lifelines_coefficient(small_cohort: pd.DataFrame) -> None:
    rng = np.random.default_rng(3)
    surv = rng.uniform(0.5, 0.99, len(small_cohort))
    time, event = small_cohort["time"].to_numpy(), small_cohort["event"].to_numpy().astype(bool)
    frame = pd.DataFrame(
        {"x": np.log(-np.log(surv)), "t": np.minimum(time, 5.0), "e": (event & (time <= 5.0)).astype(int)}
    )
    expected = CoxPHFitter().fit(frame, "t", "e").params_["x"]
    assert calibration_slope(time, event, surv, 5.0) == pytest.approx(expected, abs=1e-5)


def test_cutoffs_on_each_scale() -> None:
    lp = np.linspace(-1, 1, 101)
    assert resolve_cutoffs(CutoffSpec("tertiles"), lp, {}) == pytest.approx(
        (np.quantile(lp, 1 / 3), np.quantile(lp, 2 / 3))
    )
    assert resolve_cutoffs(CutoffSpec("user", (25.0, 75.0), "score"), lp, {}) == pytest.approx((-0.5, 0.5))
    cut = resolve_cutoffs(CutoffSpec("user", (0.1, 0.3), "risk10"), lp, {5.0: 0.9, 10.0: 0.8})
    assert [1 - 0.8 ** np.exp(c) for c in cut] == pytest.approx([0.1, 0.3])
    assert list(assign_groups(np.array([-2.0, cut[0], 0.0 + cut[1], 5.0]), cut)) == [0, 1, 2, 2]
    assert CutoffSpec("median").group_names() == ("low", "high")
    with pytest.raises(OptionError):
        CutoffSpec("user", (0.5, 0.2))
    with pytest.raises(OptionError):
        CutoffSpec("user", (0.2, 1.5), "risk5")
    with pytest.raises(OptionError):
        CutoffSpec("optimal")


def test_table_validation_messages() -> None:
    frame = pd.DataFrame({"time": [1.0, 2.0, 30.0], "event": ["yes", "no", "TRUE"]})
    data = survival_data(frame, "time", "event", "years", None)
    assert list(data.event) == [True, False, True]
    with pytest.raises(TableError, match="did you mean 'time'"):
        survival_data(frame, "tme", "event", "years", None)
    with pytest.raises(TableError, match="time unit mismatch"):
        survival_data(frame, "time", "event", "days", None)  # longest follow-up 30 days: implausible
    with pytest.raises(TableError, match="must be 0/1"):
        parse_event(pd.Series([0, 1, 2]), "event", None)
    with pytest.raises(TableError, match="only 2 event"):
        survival_data(frame, "time", "event", "years", None, min_events=10)


# ---- regressions: follow-up end, degenerate fits, penalty path, group hazard ratios ------------------


def test_baseline_is_not_carried_past_the_last_follow_up(small_cohort: pd.DataFrame) -> None:
    capped = small_cohort["time"].clip(upper=4.0).to_numpy()
    event = (small_cohort["event"].to_numpy() == 1) & (small_cohort["time"].to_numpy() <= 4.0)
    z = standardisation(small_cohort[list(PROBES)].to_numpy())
    z = (small_cohort[list(PROBES)].to_numpy() - z[0]) / z[1]
    fit = fit_cox(z, capped, event, PenaltyOptions(alpha=0.0), seed=0)
    assert fit.last_time == capped.max() == 4.0
    s = fit.survival_at(np.zeros(1), np.array([3.5, 4.0, 4.01, 5.0, 10.0]))[0]
    reference = lifelines_fit(small_cohort.assign(time=capped, event=event.astype(int)))
    assert s[0] == pytest.approx(reference.baseline_survival_.loc[:3.5].iloc[-1, 0], abs=1e-4)
    assert np.isfinite(s[:2]).all() and np.isnan(s[2:]).all()  # 5 and 10 years: not estimable
    assert fit_module._s0_at(fit, (5.0, 10.0)) == {5.0: None, 10.0: None}
    with pytest.raises(OptionError, match="5 years is not estimable"):
        resolve_cutoffs(CutoffSpec("user", (0.1, 0.3), "risk5"), z @ fit.coef, fit_module._s0_at(fit, (5.0,)))


def test_cv_folds_predict_nothing_past_their_own_follow_up(small_cohort: pd.DataFrame) -> None:
    x = small_cohort[list(PROBES)].to_numpy()
    time, event = small_cohort["time"].to_numpy(), small_cohort["event"].to_numpy().astype(bool)
    grid = np.array([1.0, 5.0, float(time.max())])
    oof = cv_repeat(x, time, event, PenaltyOptions(alpha=0.0), CutoffSpec("median"), 3, 1, grid)
    checked = 0
    for train, test in StratifiedKFold(3, shuffle=True, random_state=1).split(x, event):
        beyond = grid > time[train].max()  # the patient with the longest follow-up is in this test fold
        checked += int(beyond.sum())
        assert np.isnan(oof.survival[np.ix_(test, beyond)]).all()
        assert np.isnan(oof.null_survival[np.ix_(test, beyond)]).all()
        assert np.isfinite(oof.survival[np.ix_(test, ~beyond)]).all()
    assert checked == 1


def test_failed_unpenalised_fit_is_a_user_error() -> None:
    rng = np.random.default_rng(1)  # 20 patients, 10 predictors, 11 events: sksurv's Newton step fails
    time, event, z = rng.exponential(5, 20) + 0.5, rng.random(20) < 0.6, rng.normal(size=(20, 10))
    with pytest.raises(RiskModelError, match="unpenalised Cox fit failed.*Drop --penalty 0"):
        fit_cox(z, time, event, PenaltyOptions(alpha=0.0), seed=0)


def test_large_coefficients_are_warned_about() -> None:
    assert fit_module.coefficient_warnings(np.array([0.5, -9.9]), ("A", "B")) == []
    (warning,) = fit_module.coefficient_warnings(np.array([0.5, -154.0, 12.0]), ("A", "B", "C"))
    assert "2 coefficient(s) exceed 10 per SD" in warning and "-154 for B" in warning


def test_auxiliary_fits_that_fail_are_recorded_as_not_estimable(
    small_cohort: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    time, event = small_cohort["time"].to_numpy(), small_cohort["event"].to_numpy().astype(bool)
    with pytest.raises(ConvergenceError), warnings.catch_warnings():  # lifelines on a constant predictor
        warnings.simplefilter("ignore")
        CoxPHFitter().fit(pd.DataFrame({"lp": 0.0, "t": time, "e": event}), "t", "e")
    ph = fit_module._ph_check(np.zeros(time.size), time, event)
    assert ph.p_value is None and ph.interpretation.startswith("not estimable")

    def diverge(*args, **kwargs):
        raise ConvergenceError("delta contains nan value(s)")

    monkeypatch.setattr(fit_module.CoxPHFitter, "fit", diverge)
    row = fit_module._univariable(small_cohort["PLK1"].to_numpy(), time, event)
    assert row.hr_per_sd is None and row.ci == (None, None) and row.note.startswith("not estimable")


def test_penalty_is_chosen_among_alphas_evaluated_in_every_inner_fold(
    small_cohort: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = small_cohort[list(PROBES)].to_numpy()
    mean, sd = standardisation(x)
    z = (x - mean) / sd
    time, event = small_cohort["time"].to_numpy(), small_cohort["event"].to_numpy().astype(bool)
    options = PenaltyOptions(n_alphas=12)
    alphas, _ = coxnet_path(z, time, event, options)
    real, calls = coxnet_path, []

    def first_fold_stops_early(z_, t_, e_, o_, a_=None, f_=None):
        path, coefs = real(z_, t_, e_, o_, a_, f_)
        calls.append(coefs)
        return (path[:7], coefs[:, :7]) if len(calls) == 1 else (path, coefs)

    monkeypatch.setattr(cox_module, "coxnet_path", first_fold_stops_early)
    total = cox_module.cv_partial_likelihood(z, time, event, alphas, options, seed=3)
    assert np.isneginf(total[7:]).all()  # evaluated in 4 of 5 folds only: never chosen
    # independent sum over the 5 folds for the alphas every fold reached
    expected = np.zeros(7)
    folds = StratifiedKFold(options.inner_folds, shuffle=True, random_state=3).split(z, event)
    for (train, _), coefs in zip(folds, calls, strict=True):
        for j in range(7):
            lp = z @ coefs[:, j]
            expected[j] += _loglik_by_risk_sets(lp, time, event) - _loglik_by_risk_sets(
                lp[train], time[train], event[train]
            )
    np.testing.assert_allclose(total[:7], expected, atol=1e-6)


def _loglik_by_risk_sets(lp: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Cox partial log-likelihood straight from its definition (risk set of each event, no ties here)."""
    return float(sum(lp[i] - np.log(np.exp(lp[time >= time[i]]).sum()) for i in np.flatnonzero(event)))


def test_group_hazard_ratios_with_groups_without_events() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(["low", "mid", "high", "none"], 30)
    time = rng.exponential(np.repeat([8.0, 5.0, 3.0, 5.0], 30))
    event = rng.random(120) < 0.7
    event[labels == "none"] = False
    order = ["low", "mid", "high", "none"]
    rows = {r.group: r for r in hazard_ratios_vs_reference(time, event, labels, order)}
    assert rows["none"].hazard_ratio is None and "group 'none' has no events" in rows["none"].note
    keep = labels != "none"
    frame = pd.DataFrame(
        {"mid": labels[keep] == "mid", "high": labels[keep] == "high", "t": time[keep], "e": event[keep]}
    ).astype(float)
    reference = CoxPHFitter().fit(frame, "t", "e")
    assert rows["high"].hazard_ratio == pytest.approx(np.exp(reference.params_["high"]), rel=1e-6)
    assert rows["mid"].upper == pytest.approx(reference.summary.loc["mid", "exp(coef) upper 95%"], rel=1e-6)
    event[labels == "low"] = False
    rows = hazard_ratios_vs_reference(time, event, labels, ["low", "mid", "high", "none"])
    assert [r.hazard_ratio for r in rows] == [None, None, None]
    assert all("reference group 'low' has no events" in r.note for r in rows)
