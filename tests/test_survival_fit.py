"""Calibration end to end on GSE7390 with small CV/bootstrap counts: honest CV, covariates, cut-offs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index
from sklearn.model_selection import StratifiedKFold

from sequoia_clinic.errors import OptionError, RiskModelError, TableError
from sequoia_clinic.settings import RiskSettings
from sequoia_clinic.signatures.registry import Signature, get_signature
from sequoia_clinic.survival import fit as fit_module
from sequoia_clinic.survival.cox import PenaltyOptions, fit_cox, standardisation
from sequoia_clinic.survival.cutoffs import CutoffSpec
from sequoia_clinic.survival.fit import cv_repeat, fit_risk_model
from sequoia_clinic.survival.metrics import OutOfFold
from sequoia_clinic.survival.model import RiskModel

FAST = RiskSettings(cv_repeats=2, n_bootstrap_metrics=20, n_bootstrap_fit=20)


@pytest.fixture(scope="module")
def cohort(gse7390_table: pd.DataFrame) -> pd.DataFrame:
    return gse7390_table[list(get_signature("wang76").genes)].assign(
        months=gse7390_table["time_days"] / 365.25 * 12,
        dmfs=gse7390_table["dmfs_event"].astype(bool),
        age=gse7390_table["age"],
        er_positive=gse7390_table["er"] == "positive",
    )


def test_out_of_fold_predictions_never_see_their_patient(cohort: pd.DataFrame) -> None:
    genes = list(get_signature("wang76").genes)
    x = cohort[genes].to_numpy()
    time, event = cohort["months"].to_numpy() / 12, cohort["dmfs"].to_numpy()
    grid = np.array([5.0, 10.0])
    oof = cv_repeat(x, time, event, PenaltyOptions(), CutoffSpec("tertiles"), 5, 7, grid)
    # recompute one fold independently: standardise on its training rows, fit, predict its test rows
    train, test = next(StratifiedKFold(5, shuffle=True, random_state=7).split(x, event))
    mean, sd = standardisation(x[train])
    fit = fit_cox((x[train] - mean) / sd, time[train], event[train], PenaltyOptions(), seed=7 * 100)
    np.testing.assert_allclose(oof.lp[test], ((x[test] - mean) / sd) @ fit.coef, atol=1e-12)
    assert np.all(np.diff(oof.survival, axis=1) <= 0)  # survival never increases with time
    c = concordance_index(time, -oof.lp, event)
    assert 0.55 < c < 0.8


def test_fit_with_covariates_and_user_cutoffs(cohort: pd.DataFrame) -> None:
    model = fit_risk_model(
        cohort,
        get_signature("wang76"),
        time_col="months",
        event_col="dmfs",
        time_unit="months",
        covariates=("age", "er_positive"),
        cutoffs=CutoffSpec("user", (0.1, 0.25), "risk10"),
        settings=FAST,
        endpoint="distant metastasis",
    )
    assert model.covariates == ("age", "er_positive")
    assert model.coefficients[-1] != 0  # unpenalised covariate kept
    assert model.training.median_follow_up_years == pytest.approx(
        KaplanMeierFitter().fit(cohort["months"] / 12, 1 - cohort["dmfs"]).median_survival_time_
    )
    # risk-scale cut-offs: a patient exactly at a cut-off has that 10-year risk
    assert [model.absolute_risk(c, 10.0) for c in model.cutoffs] == pytest.approx([0.1, 0.25])
    row = cohort.iloc[0]
    with pytest.raises(RiskModelError, match="covariate"):
        model.apply(row[list(model.genes)].to_dict())
    result = model.apply(
        row[list(model.genes)].to_dict(), {"age": row["age"], "er_positive": float(row["er_positive"])}
    )
    expected_group = int(np.searchsorted(model.cutoffs, result.linear_predictor, side="right"))
    assert result.group_index == expected_group
    harrell = model.performance.metric("harrell_c")
    assert harrell.bootstrap_valid == 20 and len(harrell.per_repeat) == 2
    assert harrell.mean == pytest.approx(np.mean(harrell.per_repeat))


def test_user_penalty_and_deterministic(cohort: pd.DataFrame) -> None:
    settings = RiskSettings(cv_repeats=1, n_bootstrap_metrics=10, n_bootstrap_fit=10, penalty=0.5)
    a = fit_risk_model(
        cohort,
        get_signature("wang76"),
        time_col="months",
        event_col="dmfs",
        time_unit="months",
        settings=settings,
    )
    b = fit_risk_model(
        cohort,
        get_signature("wang76"),
        time_col="months",
        event_col="dmfs",
        time_unit="months",
        settings=settings,
    )
    assert a.penalty.alpha == 0.5 and a.penalty.chosen_by == "fixed by the user"
    assert a.to_dict() == b.to_dict()


FIVE = Signature("five", ("GOLM1", "YIF1A", "CBX3", "PLK1", "FEN1"), None, (), "test", "five wang76 genes")
TINY = RiskSettings(cv_repeats=1, outer_folds=3, n_bootstrap_metrics=10, n_bootstrap_fit=10)


def _fit(frame: pd.DataFrame, **kwargs) -> RiskModel:
    return fit_risk_model(
        frame, FIVE, time_col="months", event_col="dmfs", time_unit="months", settings=TINY, **kwargs
    )


def test_horizons_past_the_follow_up_are_not_estimable(cohort: pd.DataFrame) -> None:
    short = cohort.assign(
        months=cohort["months"].clip(upper=48.0), dmfs=cohort["dmfs"] & (cohort["months"] <= 48)
    )
    model = _fit(short)
    raw = model.to_dict()
    assert raw["max_follow_up"] == pytest.approx(4.0) and model.baseline_times[-1] == pytest.approx(4.0)
    assert raw["baseline_survival_at"] == {"5": None, "10": None}  # not S0(4 y) carried forward
    assert raw["bootstrap_fit"]["baseline_survival_at"]["5"] == [None] * 10
    assert not {k for k in raw["performance"]["metrics"] if k.endswith(("_5y", "_10y"))}
    patient = model.apply(cohort.iloc[0][list(FIVE.genes)].to_dict())
    assert [h.risk for h in patient.horizons] == [None, None] and len(patient.flags) == 2
    with pytest.raises(OptionError, match="baseline survival at 5 years is not estimable"):
        _fit(short, cutoffs=CutoffSpec("user", (0.1, 0.3), "risk5"))


def test_cutoffs_that_leave_a_group_empty_are_refused(cohort: pd.DataFrame) -> None:
    with pytest.raises(
        OptionError, match=r"leave risk group 'high' empty in the training data \(counts \d+, \d+, 0"
    ):
        _fit(cohort, cutoffs=CutoffSpec("user", (0.0, 5.0), "lp"))
    oof = OutOfFold(
        lp=np.zeros(4),
        survival=np.ones((4, 1)),
        null_survival=np.ones((4, 1)),
        groups=np.array([0, 0, 2, 2]),
        grid=np.array([1.0]),
    )
    time, event = np.array([1.0, 2.0, 3.0, 4.0]), np.array([True, False, True, False])
    with pytest.raises(OptionError, match="group 'intermediate' gets no patients in cross-validation"):
        fit_module._cv_km(time, event, oof, ("low", "intermediate", "high"), (1.0,), 0, CutoffSpec())


def test_too_little_follow_up_is_refused(cohort: pd.DataFrame) -> None:
    degenerate = cohort.assign(months=0.0)
    degenerate.loc[:5, "months"] = 24.0  # 6 of 198 patients followed at all
    with pytest.raises(TableError, match="too little follow-up"):
        _fit(degenerate)
