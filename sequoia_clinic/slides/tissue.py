"""Tissue detection on a low-resolution picture of the slide (about 8 um/px by default).

The recipe follows the SEQUOIA preprocessing (``patch_gen_hdf5.py``) with CLAM's smoothing:
a pixel is tissue when its HSV saturation, median-filtered (CLAM, kernel 7), is above a threshold (Otsu,
never below ``saturation_floor`` so that a blank slide is not split into noise), it is not bright in all
three channels (each channel above its own Otsu threshold), and R, G and B all exceed ``min_rgb`` (drops
black pen, scanner borders and padding). The mask is then closed: dilated ``morphology_iterations`` times,
then eroded as many times (SEQUOIA uses 3 and 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage
from skimage.filters import threshold_otsu

from sequoia_clinic.errors import NoTissueError
from sequoia_clinic.settings import TissueSettings
from sequoia_clinic.slides.base import Slide

_LEVEL_TOLERANCE = 0.1  # a level up to 10 % finer than mask_mpp still counts as "at mask resolution"


@dataclass(frozen=True, eq=False)
class TissueMask:
    """Boolean tissue mask; pixel (row, col) covers level-0 pixels [col*ds, (col+1)*ds) x [row*ds, ...)."""

    mask: np.ndarray  # bool, H x W
    downsample: float  # level-0 pixels per mask pixel
    threshold: float  # saturation threshold used (0-255)
    tissue_fraction: float  # fraction of mask pixels that are tissue
    level: int = 0  # pyramid level the mask image was read from
    mpp: float = 0.0  # um per mask pixel


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (0-255, uint8) of an RGB uint8 image (Pillow's HSV conversion)."""
    return np.asarray(Image.fromarray(rgb).convert("HSV"))[..., 1]


def _otsu(values: np.ndarray, default: float) -> float:
    if values.size == 0 or values.min() == values.max():
        return default
    return float(threshold_otsu(values))


def tissue_from_rgb(rgb: np.ndarray, settings: TissueSettings) -> tuple[np.ndarray, float]:
    """(mask, saturation threshold) for an RGB uint8 picture of a slide. Pure function of its inputs."""
    sat = np.asarray(Image.fromarray(saturation(rgb)).filter(ImageFilter.MedianFilter(settings.median_blur)))
    valid = (rgb > settings.min_rgb).all(axis=2)
    if settings.saturation_threshold is not None:
        threshold = float(settings.saturation_threshold)
    else:
        threshold = max(_otsu(sat[valid], 255.0), float(settings.saturation_floor))
    bright = np.ones(valid.shape, dtype=bool)
    for channel in range(3):
        values = rgb[..., channel]
        bright &= values > _otsu(values[valid], 255.0)
    mask = (sat > threshold) & ~bright & valid
    iterations = settings.morphology_iterations
    if iterations > 0 and mask.any():
        mask = ndimage.binary_dilation(mask, iterations=iterations)
        mask = ndimage.binary_erosion(mask, iterations=iterations, border_value=1)
    return mask, threshold


def mask_level(slide: Slide, mask_mpp: float) -> tuple[int, int]:
    """(level, integer reduce factor) giving a picture close to ``mask_mpp`` um/px from the nearest finer level."""
    info = slide.info
    finer = [
        index
        for index in range(info.level_count)
        if info.level_mpp(index) <= mask_mpp * (1 + _LEVEL_TOLERANCE)
    ]
    level = max(finer, key=info.level_mpp) if finer else 0
    factor = max(1, round(mask_mpp / info.level_mpp(level)))
    return level, factor


def compute_tissue_mask(slide: Slide, settings: TissueSettings) -> TissueMask:
    """Tissue mask of ``slide``; raises :class:`NoTissueError` when nothing looks like tissue."""
    level, factor = mask_level(slide, settings.mask_mpp)
    rgb = slide.read_level_downscaled(level, factor)
    mask, threshold = tissue_from_rgb(rgb, settings)
    fraction = float(mask.mean()) if mask.size else 0.0
    if fraction == 0.0:
        raise NoTissueError(
            "no tissue was found on the slide",
            slide.path,
            "Check that this is a stained H&E slide; if the stain is very pale, lower the saturation threshold.",
        )
    downsample = slide.info.level_downsamples[level] * factor
    return TissueMask(
        mask=mask,
        downsample=downsample,
        threshold=threshold,
        tissue_fraction=fraction,
        level=level,
        mpp=slide.info.level_mpp(level) * factor,
    )
