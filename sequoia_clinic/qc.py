"""Quality-control warnings: a code for programs and a plain sentence for people.

Every stage that can doubt its own result (slides, features, survival, the pipeline, the report) records a
:class:`QCWarning`. Programs (de-duplication, the cohort table, tests) use the :class:`QCCode`; the message
is what a reader sees in the report, ``result.json`` and the terminal. Messages never carry patient
identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class QCCode(StrEnum):
    """What a warning is about; one code may carry different messages (e.g. one per horizon)."""

    UNTRAINED_BUNDLE = "untrained-bundle"  # demo weights: the predictions are meaningless
    MPP_ESTIMATED = "mpp-estimated"  # pixel size inferred from the objective power
    TILES_RESAMPLED = "tiles-resampled"  # no pyramid level at the target resolution
    FEW_TILES = "few-tiles"  # fewer usable tiles than cluster tokens: k-means skipped
    EMPTY_CLUSTERS = "empty-clusters"  # k-means left clusters empty; their rows hold the fill value
    CACHE_NOT_WRITTEN = "cache-not-written"  # the feature cache could not be written (result unaffected)
    CACHE_ENTRY_REJECTED = "cache-entry-rejected"  # a corrupt or mismatching cache entry was recomputed
    CORRUPT_TILES = "corrupt-tiles"  # stored tiles that could not be decoded; the tiles over them left out
    PIXELS_CONVERTED = "pixels-converted"  # 16-bit, grayscale, palette or alpha converted to 8-bit RGB
    RISK_MODEL_NOT_ON_PREDICTED = "risk-model-not-on-predicted-expression"
    RISK_MODEL_FIT = "risk-model-fit"  # a warning stored with the risk model at calibration
    INPUTS_OUT_OF_RANGE = "inputs-out-of-range"  # model inputs outside the calibration cohort's range
    INPUTS_ON_OTHER_SCALE = "inputs-on-other-scale"  # most inputs outside it: probably another scale
    LINEAR_PREDICTOR_EXTRAPOLATED = "linear-predictor-extrapolated"
    HORIZON_NOT_ESTIMABLE = "horizon-not-estimable"  # absolute risk beyond the calibration follow-up
    RISK_CI_NOT_ESTIMABLE = "risk-ci-not-estimable"  # too few bootstrap refits reach the horizon
    OUTSIDE_POPULATION = "outside-population"  # a given clinical value is outside the model's population
    SPECIMEN_NOT_DEVELOPED = "specimen-not-developed"  # specimen type the model was not developed on
    INADEQUATE_SPECIMEN = "inadequate-specimen"  # below the minimum tissue area or tiles (--allow-inadequate)
    UNSTABLE_GROUP = "unstable-risk-group"  # the risk group flips in too many repeats of the stochastic steps


@dataclass(frozen=True)
class QCWarning:
    """One quality-control concern."""

    code: QCCode
    message: str

    def __str__(self) -> str:
        return self.message


def unique(warnings: tuple[QCWarning, ...] | list[QCWarning]) -> tuple[QCWarning, ...]:
    """The warnings in order, exact repeats (same code and message) removed."""
    return tuple(dict.fromkeys(warnings))
