"""Repeatability: the stochastic steps re-run from the cached tile features, checked against a direct recomputation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sequoia_clinic.features.clusters import cluster_features
from sequoia_clinic.pipeline.predict import PredictRequest, load_folds, run_prediction
from sequoia_clinic.pipeline.repeatability import UNSTABLE_SHARE, Repeatability, repeatability
from sequoia_clinic.qc import QCCode
from sequoia_clinic.settings import Settings
from sequoia_clinic.survival.model import RiskModel

MODEL = Path(__file__).resolve().parents[1] / "models" / "risk" / "gse7390-wang76.json"


def _record(groups: tuple[str, ...]) -> Repeatability:
    n = len(groups)
    return Repeatability(
        n, tuple(range(n)), tuple(float(i) for i in range(n)), groups, "high", (0.0, 1.0), False
    )


def test_group_stability_and_the_flag() -> None:
    stable = _record(("high",) * 8 + ("intermediate",) * 2)  # 20% differ: not more than the share
    assert (
        UNSTABLE_SHARE == 0.2 and stable.same_group == 8 and not stable.unstable and stable.warning() is None
    )
    assert "the group was high in 8 of 10 repeats" in stable.sentence()
    unstable = _record(("high",) * 7 + ("intermediate",) * 3)
    warning = unstable.warning()
    assert unstable.unstable and warning is not None and warning.code is QCCode.UNSTABLE_GROUP


@pytest.mark.parametrize("slide", ["cmu_svs", "mosaic_pyramid"])
def test_repeats_equal_an_independent_recomputation(slide: str, demo_bundle, request) -> None:
    settings = Settings()
    ensemble = load_folds(demo_bundle, settings)
    prediction = run_prediction(
        PredictRequest(request.getfixturevalue(slide)), demo_bundle, ensemble, settings
    )
    model = RiskModel.load(MODEL)
    index = {g: i for i, g in enumerate(demo_bundle.genes)}
    reported = model.apply({g: float(prediction.expression[index[g]]) for g in model.genes})
    rep = repeatability(prediction, ensemble, model, index, None, reported, repeats=3)
    run = prediction.settings_used
    assert not rep.tiles_resampled  # every kept tile was encoded (fewer than the 4,000 cap)
    for r in range(3):  # repeat r = k-means seed kmeans_seed + 1 + r on the same tile features
        clusters = cluster_features(
            prediction.tile_features, run.n_clusters, run.kmeans_seed + 1 + r, run.n_init
        )
        _, mean = ensemble.predict(clusters.features)
        lp = model.apply({g: float(mean[0][index[g]]) for g in model.genes}).linear_predictor
        # the repeats run as one batch through the folds: float32 rounding of a batched GEMM, nothing more
        assert rep.linear_predictors[r] == pytest.approx(lp, rel=1e-6, abs=1e-6)
    folds = [
        model.apply({g: float(f[index[g]]) for g in model.genes}).linear_predictor
        for f in prediction.per_fold
    ]
    assert rep.fold_lp_range == pytest.approx((min(folds), max(folds)))
    if slide == "cmu_svs":  # 42 tiles < 100 tokens: no k-means, so nothing varies
        assert rep.linear_predictors == pytest.approx([reported.linear_predictor] * 3)
        assert rep.same_group == 3
    else:  # k-means runs: another seed gives another partition and (slightly) another score
        assert np.ptp(rep.linear_predictors) > 0
