"""The clinical steps of ``score``: the patient's covariates for the risk model, the intended-population
check and the specimen-adequacy gate.

* :func:`model_covariates`: the risk model's clinical predictors from the patient's values; a model that
  needs a value not given is refused (``MissingCovariate``, naming the option, exit 2).
* :func:`population_warnings`: values outside the model's declared population (page 1 + ``result.json``
  code ``outside-population``); with ``strict`` the run is refused instead.
* :func:`check_adequacy`: a slide below the minimum tissue area or kept tiles is refused (one line with the
  measured and required values) unless ``allow_inadequate``, which turns it into a page-1 flag.

Adequacy defaults (:data:`DEFAULT_ADEQUACY`): 100 kept tiles, the number of cluster tokens SEQUOIA was
trained with (below it k-means is skipped and the model sees filler rows), and 4 mm² of tissue, Prosigna's
minimum tumour area for a valid assay (we measure tissue, not tumour, so this is a lower bound).
"""

from __future__ import annotations

from dataclasses import dataclass

from sequoia_clinic.bundles.manifest import SpecimenMinimums
from sequoia_clinic.clinical_choices import SpecimenType
from sequoia_clinic.errors import OptionError, SequoiaError
from sequoia_clinic.qc import QCCode, QCWarning
from sequoia_clinic.survival.clinical import ClinicalInputs, patient_predictors
from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.population import population_flags


@dataclass(frozen=True)
class AdequacyRule:
    """The minimum specimen a score is computed on."""

    min_tissue_mm2: float = 4.0
    min_tiles: int = 100
    rationale: str = (
        "100 kept tiles = SEQUOIA's 100 cluster tokens (fewer: k-means skipped, filler rows); 4 mm2 of tissue = "
        "Prosigna's minimum tumour area (tissue here, so a lower bound)"
    )


DEFAULT_ADEQUACY = AdequacyRule()


@dataclass(frozen=True)
class AdequacyRequest:
    """The user's adequacy minimums; a field left None takes the bundle's declared value, else the default."""

    min_tissue_mm2: float | None = None
    min_tiles: int | None = None


def adequacy_rule(declared: SpecimenMinimums | None, request: AdequacyRequest) -> AdequacyRule:
    """The rule of one run: the user's values, else the bundle's declared minimums, else the tool's defaults."""
    base = (
        AdequacyRule(
            declared.min_tissue_mm2, declared.min_tiles, declared.rationale or DEFAULT_ADEQUACY.rationale
        )
        if declared is not None
        else DEFAULT_ADEQUACY
    )
    return AdequacyRule(
        min_tissue_mm2=base.min_tissue_mm2 if request.min_tissue_mm2 is None else request.min_tissue_mm2,
        min_tiles=base.min_tiles if request.min_tiles is None else request.min_tiles,
        rationale=base.rationale,
    )


@dataclass(frozen=True)
class Adequacy:
    """The specimen measured against the rule."""

    rule: AdequacyRule
    tissue_mm2: float
    tiles_kept: int

    @property
    def adequate(self) -> bool:
        return self.tissue_mm2 >= self.rule.min_tissue_mm2 and self.tiles_kept >= self.rule.min_tiles

    def shortfall(self) -> str:
        parts = []
        if self.tissue_mm2 < self.rule.min_tissue_mm2:
            parts.append(f"tissue {self.tissue_mm2:.2f} mm² (minimum {self.rule.min_tissue_mm2:g} mm²)")
        if self.tiles_kept < self.rule.min_tiles:
            parts.append(f"{self.tiles_kept} tiles kept (minimum {self.rule.min_tiles})")
        return " and ".join(parts)


class InadequateSpecimen(SequoiaError):
    """A slide below the adequacy minimums, without ``--allow-inadequate``."""


def check_adequacy(adequacy: Adequacy, allow_inadequate: bool) -> tuple[QCWarning, ...]:
    """Refuse an inadequate specimen, or flag it when allowed."""
    if adequacy.adequate:
        return ()
    if not allow_inadequate:
        raise InadequateSpecimen(
            f"inadequate specimen: {adequacy.shortfall()}",
            fix="Scan a larger tissue section, or pass --allow-inadequate to report with a flag.",
        )
    return (
        QCWarning(
            QCCode.INADEQUATE_SPECIMEN,
            f"Inadequate specimen, reported on request (--allow-inadequate): {adequacy.shortfall()}. The "
            "result may not be representative of the tumour.",
        ),
    )


def model_covariates(model: RiskModel, inputs: ClinicalInputs) -> dict[str, float] | None:
    """The model's clinical predictors for this patient (None for a genes-only model)."""
    if not model.covariates:
        return None
    if not model.clinical:  # numeric covariates of an older model: only by name (patient JSON extras)
        given = dict(inputs.extra)
        absent = [c for c in model.covariates if c not in given]
        if absent:
            raise OptionError(
                f"the risk model needs covariate(s) {', '.join(absent)}, which were not given",
                fix="Give them in a patient JSON (--clinical), or use a genes-only risk model.",
                option="clinical",
            )
        return {c: given[c] for c in model.covariates}
    return patient_predictors(model.clinical, inputs)


class OutsidePopulation(SequoiaError):
    """The patient is outside the model's intended population and ``--strict-population`` was given."""


def population_warnings(
    model: RiskModel, inputs: ClinicalInputs, specimen: SpecimenType | None, strict: bool
) -> tuple[QCWarning, ...]:
    """Warnings for values outside the model's population; with ``strict`` the first is an error."""
    flags = population_flags(model.population, inputs, specimen)
    if strict and flags:
        raise OutsidePopulation(
            flags[0].message,
            fix="Drop --strict-population to report with a flag.",
            option="strict_population",
        )
    return flags
