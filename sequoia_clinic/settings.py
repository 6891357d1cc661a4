"""One frozen settings object for a whole run, built once at the boundary (CLI or caller) and passed in.

Nothing deep inside the package reads the environment: every knob lives here. Each pipeline stage has its
own frozen section; ``Settings`` groups them. Use :func:`dataclasses.replace` to derive variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Device(StrEnum):
    """Where the networks run; the value is the ``--device`` choice (cuda = the first visible GPU)."""

    CPU = "cpu"
    CUDA = "cuda"


class TileOrder(StrEnum):
    """Which tiles feed the encoder and the order k-means sees them in (``features/sampling.py``).

    ``grid``: the kept tiles in grid (row-major) order; above the tile cap, the first ``max_tiles`` that pass
    the pixel check in a seeded shuffle of the candidates (Python ``random``, the sample seed), in grid
    order. ``reference``: the SEQUOIA preprocessing's rule: the first ``max_tiles`` that pass in the grid
    enumerated column by column and shuffled with numpy seed 5, fed to k-means in byte order of their
    ``"x_y"`` level-0 keys (the HDF5 key order of the reference feature step).
    """

    GRID = "grid"
    REFERENCE = "reference"


class Precision(StrEnum):
    """Tile-encoder arithmetic: auto (bfloat16 where the device has it natively), fp32 or bf16."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


@dataclass(frozen=True)
class TissueSettings:
    """Tissue detection on a low-resolution level (SEQUOIA / CLAM style; see slides/tissue.py)."""

    mask_mpp: float = 8.0  # target resolution of the mask image, um/px (about 8-16 is typical)
    median_blur: int = 7  # kernel of the median filter on saturation (CLAM)
    min_rgb: int = 50  # SEQUOIA: R, G and B must each exceed this (drops black pen / out-of-bounds)
    morphology_iterations: int = 3  # SEQUOIA: dilate x3 then erode x3
    saturation_threshold: float | None = None  # None = Otsu on the slide's saturation
    # the Otsu threshold is never below this (CLAM's fixed value): blank glass stays blank
    saturation_floor: float = 8.0


@dataclass(frozen=True)
class TileSettings:
    """Tile grid and tile reading at the target resolution."""

    target_mpp: float = 0.5  # 20x
    tile_px: int = 256
    mpp_tolerance: float = 0.1  # a level within +-10 % of the target is read without resampling
    min_mask_fraction: float = 0.05  # candidate tile: tissue-mask (8 um/px) share under it must exceed this
    # kept tile: share of its own 20x pixels that are tissue (SEQUOIA: > 20 %)
    min_tissue_fraction: float = 0.2
    reject_low_contrast: bool = True  # skimage is_low_contrast on the tile pixels, as SEQUOIA does
    batch_size: int = 64  # tiles per yielded batch
    read_threads: int = 2  # decode threads for the tile reader
    tile_cache_mb: int = 256  # budget of the tile reader's cache of decoded stored tiles


@dataclass(frozen=True)
class FeatureSettings:
    """Tile sampling and k-means cluster features (the SEQUOIA model input).

    The fields typed ``int | None`` are defined by the model bundle's preprocessing: None (the default)
    means "the bundle's value" (SEQUOIA: 4000 tiles, sample seed 99, k-means seed 0, n_init 1); a number is
    an explicit override that wins over the bundle. ``sequoia_clinic.pipeline.predict.resolve_feature_settings``
    turns them into numbers; n_clusters always follows the bundle (it is the aggregator's token count).
    """

    max_tiles: int | None = None
    sample_seed: int | None = None
    n_clusters: int = 100
    kmeans_seed: int | None = None
    min_tiles: int = 1  # fewer usable tiles than this -> NoTissueError (see features/clusters.py for <100)
    kmeans_n_init: int | None = None  # SEQUOIA: 1 = scikit-learn 1.4's n_init='auto' for k-means++
    empty_row_fill: str = "slide-mean"  # rows with no tiles: 'slide-mean' or 'zeros' (features/clusters.py)
    tile_order: TileOrder | None = None  # None = the bundle's preprocessing.tile_order (see TileOrder)


@dataclass(frozen=True)
class ReportSettings:
    """The report stage: PDF layout knobs, report text location and pseudonymisation (see report/)."""

    templates_dir: Path | None = None  # report text (TOML); None = the shipped templates/ (locations.py)
    figure_dpi: int = 200  # raster resolution of the matplotlib figures embedded in the PDF
    max_gene_rows: int = 24  # gene-table rows shown in the PDF (all genes are always in result.json)
    heatmap_genes: int = 3  # top signature genes drawn as expression heatmaps over the slide
    pseudonym_key: str | None = None  # secret for --deidentify HMAC pseudonyms; None = random key per run


@dataclass(frozen=True)
class ModelSettings:
    """Where model bundles live and optional local weight overrides (see bundles.py, encoders/)."""

    models_dir: Path | None = None  # extra folder of bundles, searched before the shipped models/
    # generated (recipe-made) demo weights; the CLI sets <user cache>/weights; None = none can be generated
    weights_cache_dir: Path | None = None
    # use this local file as the bundle's encoder weights (sha256 still checked)
    encoder_weights: Path | None = None
    loader_queue: int = 4  # decoded tile batches buffered ahead of the encoder by the loader thread


@dataclass(frozen=True)
class RiskSettings:
    """Cox risk-model calibration (see survival/fit.py); bootstrap counts bound the run time."""

    l1_ratio: float = 0.1  # elastic-net L1 share (mostly ridge: many correlated, weak genes, few events)
    # Coxnet alpha; None = chosen by inner CV (partial likelihood); 0 = unpenalised
    penalty: float | None = None
    n_alphas: int = 40  # length of the penalty path
    alpha_min_ratio: float = 0.01  # smallest alpha on the path / largest
    inner_folds: int = 5  # CV folds choosing the penalty (inside each training set)
    outer_folds: int = 5  # CV folds for the performance figures
    cv_repeats: int = 10  # repeated CV with fold seeds seed, seed+1, ...
    n_bootstrap_metrics: int = 200  # bootstrap resamples for the 95% CIs of the CV figures
    n_bootstrap_fit: int = 200  # bootstrap refits stored in the model for the absolute-risk CIs
    seed: int = 0
    min_events: int = 10
    auc_horizons_years: tuple[float, ...] = (3.0, 5.0, 10.0)
    calibration_horizons_years: tuple[float, ...] = (5.0, 10.0)
    calibration_bins: int = 5  # predicted-risk quantile groups in the calibration plot


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, in one immutable record."""

    tissue: TissueSettings = field(default_factory=TissueSettings)
    tiles: TileSettings = field(default_factory=TileSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    risk: RiskSettings = field(default_factory=RiskSettings)
    device: Device = Device.CPU
    precision: Precision = Precision.AUTO  # tile encoder arithmetic (see Precision)
    encoder_batch_size: int | None = None  # tiles per encoder pass; None: the encoder's own (EncoderSpec)
    cache_dir: Path | None = None  # per-slide feature cache; None disables caching
