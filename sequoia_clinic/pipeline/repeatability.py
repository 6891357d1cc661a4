"""The repeatability interval of a score: how much the stochastic steps move this slide's result.

SEQUOIA's per-slide steps have two seeds: the tile sample (when a slide has more kept tiles than the cap)
and k-means. :func:`repeatability` re-runs them ``repeats`` times from the cached tile features of the
:class:`~sequoia_clinic.pipeline.predict.Prediction` (no re-encoding, so it costs seconds): repeat r uses
k-means seed ``kmeans_seed + 1 + r`` and, when the cap was binding, a fresh seeded sample of the encoded
tiles of the same share of the kept tiles (a sample of the sample: an approximation of re-sampling the
slide). Each repeat's expression goes through the same fold ensemble and risk model; the interval is the
range of the linear predictor and score over repeats, and the fold spread is the range over the folds of
the main run. A slide whose risk group differs from the reported one in more than
:data:`UNSTABLE_SHARE` of the repeats is flagged (``unstable-risk-group``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sequoia_clinic.aggregator.ensemble import FoldEnsemble
from sequoia_clinic.features.clusters import cluster_features
from sequoia_clinic.pipeline.predict import Prediction
from sequoia_clinic.qc import QCCode, QCWarning
from sequoia_clinic.survival.model import PatientRisk, RiskModel

DEFAULT_REPEATS = 10
UNSTABLE_SHARE = 0.2  # the group may differ from the reported one in at most this share of repeats


@dataclass(frozen=True)
class Repeatability:
    """The score's spread over repeats of the stochastic steps, and over the folds."""

    repeats: int
    linear_predictors: tuple[float, ...]
    scores: tuple[float, ...]
    groups: tuple[str, ...]  # each repeat's risk group
    reported_group: str
    fold_lp_range: tuple[float, float]  # linear predictor of each fold's expression (main run): min, max
    tiles_resampled: bool  # False when every kept tile was used (only the k-means seed varied)

    @property
    def same_group(self) -> int:
        return sum(g == self.reported_group for g in self.groups)

    @property
    def lp_range(self) -> tuple[float, float]:
        return min(self.linear_predictors), max(self.linear_predictors)

    @property
    def score_range(self) -> tuple[float, float]:
        return min(self.scores), max(self.scores)

    @property
    def unstable(self) -> bool:
        return self.repeats - self.same_group > UNSTABLE_SHARE * self.repeats

    def sentence(self) -> str:
        low, high = self.score_range
        varied = "tile sample and k-means seeds" if self.tiles_resampled else "k-means seed"
        return (
            f"Repeatability ({self.repeats} repeats, {varied} varied): score {low:.0f}-{high:.0f}; the group was "
            f"{self.reported_group} in {self.same_group} of {self.repeats} repeats."
        )

    def warning(self) -> QCWarning | None:
        if not self.unstable:
            return None
        return QCWarning(
            QCCode.UNSTABLE_GROUP,
            f"Unstable risk group: {self.reported_group} in only {self.same_group} of {self.repeats} repeats of "
            f"the stochastic steps (more than {UNSTABLE_SHARE:.0%} differ); the score lies near a cut-off.",
        )


def _risk(model: RiskModel, expression: np.ndarray, index: Mapping[str, int], covariates) -> PatientRisk:
    return model.apply({g: float(expression[index[g]]) for g in model.genes}, covariates)


def repeatability(
    prediction: Prediction,
    ensemble: FoldEnsemble,
    model: RiskModel,
    gene_index: Mapping[str, int],
    covariates: Mapping[str, float] | None,
    reported: PatientRisk,
    repeats: int = DEFAULT_REPEATS,
) -> Repeatability:
    """Re-run tile sampling and k-means ``repeats`` times from the cached tile features (module docstring)."""
    run = prediction.settings_used
    features = prediction.tile_features
    n_used, n_kept = len(prediction.used_indices), len(prediction.kept_indices)
    resample = n_kept > n_used
    size = max(min(n_used, round(n_used * n_used / max(n_kept, 1))), 1)
    tokens = []
    for r in range(repeats):
        rows = features
        if resample:
            pick = np.random.default_rng(run.sample_seed + 1 + r).choice(n_used, size=size, replace=False)
            rows = features[np.sort(pick)]
        clusters = cluster_features(rows, run.n_clusters, run.kmeans_seed + 1 + r, run.n_init, run.fill)
        tokens.append(clusters.features)
    # one batched pass of the folds over every repeat: the per-call cost of the small ViS layers dominated
    _, means = ensemble.predict(np.stack(tokens))
    risks = [_risk(model, mean, gene_index, covariates) for mean in means]
    lps = [risk.linear_predictor for risk in risks]
    scores = [risk.score for risk in risks]
    groups = [risk.group for risk in risks]
    fold_lps = [_risk(model, fold, gene_index, covariates).linear_predictor for fold in prediction.per_fold]
    return Repeatability(
        repeats=repeats,
        linear_predictors=tuple(lps),
        scores=tuple(scores),
        groups=tuple(groups),
        reported_group=reported.group,
        fold_lp_range=(min(fold_lps), max(fold_lps)),
        tiles_resampled=resample,
    )
