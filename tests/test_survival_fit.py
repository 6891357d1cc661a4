"""Calibration end to end on GSE7390 with small CV/bootstrap counts: honest CV, covariates, cut-offs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index
from sklearn.model_selection import StratifiedKFold
from sksurv.datasets import load_breast_cancer

from sequoia_clinic.errors import RiskModelError
from sequoia_clinic.settings import RiskSettings
from sequoia_clinic.signatures import collapse_probes, get_signature
from sequoia_clinic.survival import CutoffSpec, fit_risk_model
from sequoia_clinic.survival.cox import PenaltyOptions, fit_cox, standardisation
from sequoia_clinic.survival.fit import cv_repeat

FAST = RiskSettings(cv_repeats=2, n_bootstrap_metrics=20, n_bootstrap_fit=20)


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    x, y = load_breast_cancer()
    table = collapse_probes(x, get_signature("wang76"), column_prefix="X")
    table["months"] = y["t.tdm"] / 365.25 * 12
    table["dmfs"] = y["e.tdm"]
    table["age"] = x["age"].to_numpy()
    table["er_positive"] = (x["er"] == "positive").to_numpy()
    return table


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
    assert model.training["median_follow_up_years"] == pytest.approx(
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
    perf = model.performance["metrics"]
    assert perf["harrell_c"]["bootstrap_valid"] == 20 and len(perf["harrell_c"]["per_repeat"]) == 2


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
    assert a.info["penalty"]["alpha"] == 0.5 and a.info["penalty"]["chosen_by"] == "fixed by the user"
    assert a.to_dict() == b.to_dict()
