"""One frozen settings object for a whole run, built once at the boundary (CLI or caller) and passed in.

Nothing deep inside the package reads the environment: every knob lives here. Each pipeline stage has its
own frozen section; ``Settings`` groups them. Use :func:`dataclasses.replace` to derive variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TissueSettings:
    """Tissue detection on a low-resolution level (SEQUOIA / CLAM style; see slides/tissue.py)."""

    mask_mpp: float = 8.0  # target resolution of the mask image, um/px (about 8-16 is typical)
    median_blur: int = 7  # kernel of the median filter on saturation (CLAM)
    min_rgb: int = 50  # SEQUOIA: R, G and B must each exceed this (drops black pen / out-of-bounds)
    morphology_iterations: int = 3  # SEQUOIA: dilate x3 then erode x3
    saturation_threshold: float | None = None  # None = Otsu on the slide's saturation


@dataclass(frozen=True)
class TileSettings:
    """Tile grid and tile reading at the target resolution."""

    target_mpp: float = 0.5  # 20x
    tile_px: int = 256
    mpp_tolerance: float = 0.1  # a level within +-10 % of the target is read without resampling
    min_tissue_fraction: float = 0.2  # mask fraction under a tile needed to keep it
    reject_low_contrast: bool = True  # skimage is_low_contrast on the tile pixels, as SEQUOIA does
    batch_size: int = 64  # tiles per yielded batch
    read_threads: int = 2  # decode threads for the tile reader


@dataclass(frozen=True)
class FeatureSettings:
    """Tile sampling and k-means cluster features (the SEQUOIA model input)."""

    max_tiles: int = 4000
    sample_seed: int = 99
    n_clusters: int = 100
    kmeans_seed: int = 0


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, in one immutable record."""

    tissue: TissueSettings = field(default_factory=TissueSettings)
    tiles: TileSettings = field(default_factory=TileSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    device: str = "cpu"
    encoder_batch_size: int = 32
    cache_dir: Path | None = None  # per-slide feature cache; None disables caching
    quiet: bool = False
