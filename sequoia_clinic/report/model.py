"""Typed, frozen records that describe one patient report: everything the PDF, result.json and DICOM need.

The pipeline fills a :class:`ReportData` once; the renderers only read it. Each record checks its own
consistency in ``__post_init__`` and raises :class:`~sequoia_clinic.errors.ReportError` (messages never carry
patient identifiers). Vectors are tuples of floats (small, JSON friendly); only images and per-tile arrays
are numpy arrays, and the records holding them compare by identity (``eq=False``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sequoia_clinic.errors import ReportError
from sequoia_clinic.qc import QCWarning


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ReportError(message, fix="Fix the values passed to sequoia_clinic.report (a pipeline bug).")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _non_decreasing(values: Sequence[float]) -> bool:
    return all(b >= a for a, b in zip(values, values[1:], strict=False))


@dataclass(frozen=True)
class PatientInfo:
    """Patient and specimen block of the report header. Every field is optional display text.

    Dates are ISO ``YYYY-MM-DD`` (``YYYYMMDD`` is accepted too); sex is free text (``M``/``F``/``O`` map to
    DICOM). ``pseudonymised`` is set by :func:`sequoia_clinic.report.deidentify.deidentify_report`.
    """

    name: str | None = None
    patient_id: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    accession: str | None = None
    specimen: str | None = None
    scan_date: str | None = None
    scanner: str | None = None
    pseudonymised: bool = False


@dataclass(frozen=True)
class SlideInfo:
    """The scanned slide the result was computed from."""

    path: str  # as given on the command line (replaced by a neutral name when de-identified)
    sha256: str
    format: str  # e.g. "svs", "dicom"
    width_px: int  # level-0 dimensions
    height_px: int
    mpp: float  # micrometres per pixel at level 0, as used
    mpp_source: str  # where the mpp came from, e.g. "slide metadata (aperio.MPP)" or "--mpp option"

    def __post_init__(self) -> None:
        _check(self.width_px > 0 and self.height_px > 0, "slide dimensions must be positive")
        _check(_finite(self.mpp) and self.mpp > 0, "slide mpp must be a positive number")


@dataclass(frozen=True)
class QualityControl:
    """Tissue and tile quality figures, plus the pipeline's coded warnings (plain sentences, no identifiers)."""

    tissue_area_mm2: float
    tissue_fraction: float  # of the whole slide area, 0..1
    tiles_kept: int  # tiles passing the tissue / contrast filters
    tiles_used: int  # tiles fed to the model (after sampling to max_tiles)
    warnings: tuple[QCWarning, ...] = ()

    def __post_init__(self) -> None:
        _check(0.0 <= self.tissue_fraction <= 1.0, "tissue fraction must lie in [0, 1]")
        _check(self.tissue_area_mm2 >= 0, "tissue area must be >= 0")
        _check(0 <= self.tiles_used <= self.tiles_kept, "tiles used must lie in [0, tiles kept]")


@dataclass(frozen=True)
class AbsoluteRisk:
    """Predicted probability of the endpoint event (e.g. distant recurrence) by ``horizon`` with a 95% CI."""

    horizon: float  # in the cohort's time unit (years)
    risk: float  # probability 0..1
    lower: float | None = None
    upper: float | None = None

    def __post_init__(self) -> None:
        _check(self.horizon > 0, "absolute-risk horizon must be positive")
        for value in (self.risk, self.lower, self.upper):
            _check(value is None or (0.0 <= value <= 1.0), "absolute risks and their CI must lie in [0, 1]")
        if self.lower is not None and self.upper is not None:
            _check(self.lower <= self.risk <= self.upper, "absolute risk must lie inside its CI")


@dataclass(frozen=True)
class RiskResult:
    """The patient's risk: linear predictor, 0-100 score, group and absolute risks."""

    linear_predictor: float  # centred Cox linear predictor (log relative hazard vs the cohort mean)
    score: float  # 0..100: percentile of the linear predictor in the calibration cohort
    group_names: tuple[str, ...]  # lowest risk first, e.g. ("Low", "Intermediate", "High")
    group_index: int
    absolute_risks: tuple[AbsoluteRisk, ...]  # e.g. at 5 and 10 years; leave out horizons not estimable
    linear_predictor_out_of_range: bool = False  # outside the calibration cohort's observed range

    def __post_init__(self) -> None:
        _check(_finite(self.linear_predictor), "linear predictor must be finite")
        _check(_finite(self.score) and 0.0 <= self.score <= 100.0, "risk score must lie in [0, 100]")
        _check(len(self.group_names) >= 2, "at least two risk groups are needed")
        _check(0 <= self.group_index < len(self.group_names), "risk group index out of range")

    @property
    def group(self) -> str:
        return self.group_names[self.group_index]


@dataclass(frozen=True)
class KMCurve:
    """A cross-validated Kaplan-Meier curve of one risk group (step function; first time is 0)."""

    group: str
    times: tuple[float, ...]
    survival: tuple[float, ...]  # probability 0..1
    lower: tuple[float, ...]  # 95% CI
    upper: tuple[float, ...]
    at_risk: tuple[int, ...]  # numbers at risk at CalibrationCohort.at_risk_times
    n: int = 0
    events: int = 0

    def __post_init__(self) -> None:
        size = len(self.times)
        _check(size >= 1, f"KM curve of group {self.group!r} is empty")
        _check(
            len(self.survival) == len(self.lower) == len(self.upper) == size,
            f"KM curve of group {self.group!r}: times, survival and CI must have equal lengths",
        )
        _check(_non_decreasing(self.times), f"KM curve of group {self.group!r}: times must be sorted")


@dataclass(frozen=True)
class Metric:
    """One cross-validated performance figure with its 95% CI, e.g. Harrell's C."""

    name: str
    value: float
    lower: float | None = None
    upper: float | None = None
    note: str = ""  # e.g. "tau = 10 y"


@dataclass(frozen=True)
class CalibrationCohort:
    """The cohort the risk model was calibrated on: its score distribution, groups, KM curves, performance."""

    name: str
    n: int
    events: int
    endpoint: str  # e.g. "Distant metastasis-free survival"
    time_unit: str  # e.g. "years"
    linear_predictors: tuple[float, ...]  # the cohort's linear predictors that define the 0-100 score scale
    cutoffs: tuple[float, ...]  # group boundaries on the 0-100 score scale, len = groups - 1
    cutoff_source: str  # how the cut-offs were fixed, e.g. "tertiles of the calibration cohort"
    km_curves: tuple[KMCurve, ...]  # one per risk group, lowest risk first
    at_risk_times: tuple[float, ...]  # times where numbers at risk are counted
    performance: tuple[Metric, ...] = ()
    description: str = ""  # one line, e.g. "GSE7390: node-negative, untreated, age < 61"
    lp_cutoffs: tuple[float, ...] | None = None  # the model's own cut-offs on the LP scale, when it has them

    def __post_init__(self) -> None:
        _check(self.n > 0 and 0 <= self.events <= self.n, "cohort n and events are inconsistent")
        _check(len(self.linear_predictors) >= 2, "cohort needs at least two linear predictors")
        _check(all(map(_finite, self.linear_predictors)), "cohort linear predictors must be finite")
        _check(_non_decreasing(self.cutoffs), "cut-offs must be sorted")
        _check(all(0.0 <= c <= 100.0 for c in self.cutoffs), "cut-offs must lie on the 0-100 score scale")
        _check(_non_decreasing(self.at_risk_times), "at-risk times must be sorted")
        if self.lp_cutoffs is not None:
            _check(len(self.lp_cutoffs) == len(self.cutoffs), "one LP cut-off per score cut-off is needed")
            _check(_non_decreasing(self.lp_cutoffs), "LP cut-offs must be sorted")
        for curve in self.km_curves:
            _check(
                len(curve.at_risk) == len(self.at_risk_times),
                f"KM curve of group {curve.group!r}: one at-risk count per at-risk time is needed",
            )

    def cutoffs_on_linear_predictor(self) -> tuple[float, ...]:
        """Cut-offs on the linear-predictor scale: ``lp_cutoffs`` when given, else the score cut-offs mapped
        back through the cohort's LP percentiles (the score is the LP's percentile in the cohort)."""
        if self.lp_cutoffs is not None:
            return self.lp_cutoffs
        values = np.asarray(self.linear_predictors, dtype=float)
        return tuple(float(np.percentile(values, c)) for c in self.cutoffs)


@dataclass(frozen=True)
class GeneRow:
    """One signature gene: predicted expression and how it compares with the calibration cohort."""

    gene: str
    expression: float  # predicted expression in SignatureResult.expression_unit
    z_score: float  # (expression - cohort mean) / cohort SD
    percentile: float  # 0..100 within the calibration cohort
    hazard_ratio_per_sd: float  # univariable or model HR per SD of this gene; > 1: higher = more risk
    in_calibration_range: bool = True  # expression inside the cohort's observed range
    cv_r: float | None = None  # cross-validated Pearson r in the bundle's evaluation (None: not evaluated)
    reliable: bool | None = None  # passes the bundle's reliability rule (strict); None: not evaluated

    def __post_init__(self) -> None:
        _check(
            all(map(_finite, (self.expression, self.z_score, self.hazard_ratio_per_sd))),
            f"gene {self.gene!r}: expression, z-score and HR must be finite",
        )
        _check(
            self.cv_r is None or (_finite(self.cv_r) and -1.0 <= self.cv_r <= 1.0),
            f"gene {self.gene!r}: cross-validated r must lie in [-1, 1]",
        )
        _check(0.0 <= self.percentile <= 100.0, f"gene {self.gene!r}: percentile must lie in [0, 100]")
        _check(self.hazard_ratio_per_sd > 0, f"gene {self.gene!r}: hazard ratio must be positive")

    @property
    def raises_risk(self) -> bool:
        return self.hazard_ratio_per_sd > 1.0


@dataclass(frozen=True)
class SignatureResult:
    """The gene signature behind the risk model, with the patient's predicted values."""

    name: str  # e.g. "Wang 76-gene (ER+ subset)"
    expression_unit: str  # e.g. "log2(TPM + 1)"
    genes: tuple[GeneRow, ...]
    description: str = ""
    reliability: str | None = None  # how GeneRow.reliable was decided; None: the bundle has no evaluation

    def __post_init__(self) -> None:
        _check(len(self.genes) >= 1, "signature has no genes")
        names = [row.gene for row in self.genes]
        _check(len(set(names)) == len(names), "signature genes must be unique")

    @property
    def reliable_count(self) -> int:
        """Signature genes the bundle's evaluation finds reliably predicted."""
        return sum(1 for row in self.genes if row.reliable)


@dataclass(frozen=True, eq=False)
class TileHeatmap:
    """Per-tile values of one gene (same order as SlideImages.tile_coords)."""

    gene: str
    values: np.ndarray  # float, shape (n_tiles,)


@dataclass(frozen=True, eq=False)
class SlideImages:
    """Pictures of the slide: a plain RGB thumbnail, the tissue mask and the tiles the model used.

    The report draws the mask outline and the tile outlines itself, so pass the thumbnail WITHOUT overlays.
    """

    thumbnail: np.ndarray  # uint8 (h, w, 3), the whole slide
    tissue_mask: np.ndarray | None  # bool (mh, mw), any resolution covering the whole slide
    tile_coords: np.ndarray  # int (n_tiles, 2): x, y of each used tile's top-left corner, level-0 px
    tile_size: int  # tile edge in level-0 px
    heatmaps: tuple[TileHeatmap, ...] = ()
    heatmap_statement: str = ""  # one line saying what the heatmap values are

    def __post_init__(self) -> None:
        thumb = self.thumbnail
        _check(
            thumb.ndim == 3 and thumb.shape[2] == 3 and thumb.dtype == np.uint8, "thumbnail must be uint8 RGB"
        )
        _check(self.tile_coords.ndim == 2 and self.tile_coords.shape[1] == 2, "tile coords must be (n, 2)")
        _check(self.tile_size > 0, "tile size must be positive")
        if self.tissue_mask is not None:
            _check(self.tissue_mask.ndim == 2, "tissue mask must be 2-D")
        for heatmap in self.heatmaps:
            _check(
                heatmap.values.shape == (len(self.tile_coords),),
                f"heatmap of {heatmap.gene!r} needs one value per tile",
            )


@dataclass(frozen=True)
class ClinicalSummary:
    """The patient's clinical values given to ``score`` and how the risk model used them."""

    given: tuple[tuple[str, str], ...]  # (label, value) of every value given
    model_covariates: tuple[str, ...]  # the risk model's clinical predictors ("" when genes only)
    genomic_lp: float  # the genes' part of the linear predictor
    clinical_lp: float  # the covariates' part (0 for a genes-only model)
    population: tuple[str, ...] = ()  # the model's intended population, one criterion a line
    specimen_type: str | None = None

    def __post_init__(self) -> None:
        _check(
            _finite(self.genomic_lp) and _finite(self.clinical_lp), "linear-predictor parts must be finite"
        )


@dataclass(frozen=True)
class RepeatabilityResult:
    """The score's spread over repeats of the stochastic steps (tile sample, k-means seed) and over folds."""

    repeats: int
    score_low: float
    score_high: float
    lp_low: float
    lp_high: float
    fold_lp_low: float
    fold_lp_high: float
    same_group: int  # repeats whose group is the reported one
    varied: str  # what was varied, e.g. "k-means seed"
    unstable: bool

    def __post_init__(self) -> None:
        _check(self.repeats >= 1 and 0 <= self.same_group <= self.repeats, "repeat counts are inconsistent")
        _check(0 <= self.score_low <= self.score_high <= 100, "repeatability scores must lie in [0, 100]")


@dataclass(frozen=True)
class Provenance:
    """What produced the result: software, model bundle and risk model, with their hashes."""

    software_version: str
    bundle_name: str
    bundle_version: str
    bundle_sha256: str
    bundle_trained: bool  # False for the untrained demo bundle: its numbers are meaningless
    risk_model_name: str
    risk_model_sha256: str
    encoder: str = ""  # e.g. "UNI ViT-L/16 (demo: random weights)"
    device: str = "cpu"
    precision: str = "fp32"  # tile-encoder arithmetic: fp32 or bf16


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything one report shows. Build it once after scoring; render it with the report functions."""

    patient: PatientInfo
    report_id: str
    report_date: str  # ISO date shown on the report
    created: str  # ISO 8601 UTC timestamp of the run (dropped by determinism checks)
    slide: SlideInfo
    qc: QualityControl
    risk: RiskResult
    cohort: CalibrationCohort
    signature: SignatureResult
    provenance: Provenance
    images: SlideImages | None = None
    # Seconds per stage in run order, as a tree in flat form: "inference" includes "inference.encode" etc.
    # (a parent is never summed with its children); "total", when present, is the measured wall of the run.
    timings: Mapping[str, float] = field(default_factory=dict)
    demo: bool = False  # True: every page carries the DEMONSTRATION banner
    clinical: ClinicalSummary | None = None  # clinical values and the clinical part of the risk
    repeatability: RepeatabilityResult | None = None
    model_card: tuple[tuple[str, str, str], ...] = ()  # TRIPOD+AI (number, topic, text) of the model

    def __post_init__(self) -> None:
        _check(bool(self.report_id), "report id must not be empty")
        _check(
            len(self.cohort.km_curves) == len(self.risk.group_names), "one KM curve per risk group is needed"
        )
        _check(
            len(self.cohort.cutoffs) == len(self.risk.group_names) - 1,
            "the number of cut-offs must be the number of risk groups minus one",
        )
        _check(all(v >= 0 and math.isfinite(v) for v in self.timings.values()), "timings must be >= 0")

    @property
    def stage_seconds(self) -> dict[str, float]:
        """The top-level stages (no children, no total)."""
        return {k: float(v) for k, v in self.timings.items() if "." not in k and k != "total"}

    @property
    def total_seconds(self) -> float:
        """The measured wall of the run when recorded, else the sum of the top-level stages."""
        if "total" in self.timings:
            return float(self.timings["total"])
        return float(sum(self.stage_seconds.values()))


def make_report_id(*parts: str) -> str:
    """A short, deterministic report id from non-identifying inputs (slide, bundle and model hashes).

    The same slide scored with the same models always gets the same id, and the id reveals nothing about
    the patient. Example: ``make_report_id(slide_sha256, bundle_sha256, risk_model_sha256, version)``.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return "SQ-" + digest[:12].upper()
