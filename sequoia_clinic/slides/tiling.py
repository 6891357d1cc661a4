"""The tile grid at the target resolution (0.5 um/px, 256 px by default) and the keep/drop decision.

Level choice (the recipe of the project's slide reference notes, section 7): the coarsest pyramid level whose pixel size is at
most ``target_mpp * (1 + mpp_tolerance)``. Downsamples are compared through pixel sizes with that tolerance,
so 2.0005 counts as 2 (tiffslide's ``get_best_level_for_downsample`` would not). If the level is within the
tolerance of the target, exactly ``tile_px`` pixels are read with no resampling (0.499 um/px gives 256 px, not
257, as SEQUOIA's AppMag rule and TRIDENT's magnification buckets do); otherwise
``round(tile_px * target_mpp / level_mpp)`` pixels are read and shrunk with area interpolation.

The grid is laid out in the read level's own pixels (tiles abut exactly there), on a non-overlapping
lattice from (0, 0), with only tiles fully inside the slide. Level-0 coordinates are the smallest level-0
pixels that map back onto each tile's corner.

Keep decision, in two steps as in the SEQUOIA preprocessing (a coarse candidate test on the mask, then
the real test on the tile's own pixels):
1. ``build_tile_grid``: the tissue-mask share under the tile (exact area-weighted average of the 8 um/px
   mask) must exceed ``min_mask_fraction`` (SEQUOIA: the mask at the tile's corner).
2. ``select_tiles`` reads the candidates at 20x and keeps a tile when more than ``min_tissue_fraction`` of its
   pixels are tissue (saturation above the slide's mask threshold; SEQUOIA: > 20 % after re-masking the tile)
   and, with ``reject_low_contrast``, skimage's ``is_low_contrast`` is false (as SEQUOIA). SEQUOIA re-masks
   each tile with its own Otsu threshold, which makes its 20 % relative (a blank tile still splits in two);
   we use the slide's threshold instead so that the 20 % means tissue.
The decisive test runs on full-resolution pixels, so an SVS and its DICOM conversion (identical level 0,
lossy lower levels) get the same kept tiles even though their low-resolution masks differ slightly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from skimage.exposure import is_low_contrast

from sequoia_clinic.errors import NoTissueError, SlideFormatError
from sequoia_clinic.settings import TileSettings
from sequoia_clinic.slides.base import Slide, level_to_level0
from sequoia_clinic.slides.grid import TileGrid
from sequoia_clinic.slides.tile_reader import iter_tile_batches
from sequoia_clinic.slides.tissue import TissueMask, saturation

_FIX_NO_TILES = "Check that the slide holds stained tissue and that its pixel size (mpp) is right."


def choose_read_level(slide: Slide, settings: TileSettings) -> tuple[int, int]:
    """(level, read_px) for the target resolution; refuses slides coarser than the target."""
    info = slide.info
    limit = settings.target_mpp * (1 + settings.mpp_tolerance)
    finer = [level for level in range(info.level_count) if info.level_mpp(level) <= limit]
    if not finer:
        raise SlideFormatError(
            f"the full resolution ({info.level_mpp(0):.3f} um/px) is coarser than the "
            f"{settings.target_mpp} um/px the model needs",
            slide.path,
            "Scan at 20x or higher; if the recorded pixel size is wrong, pass the right one with --mpp.",
        )
    level = max(finer, key=info.level_mpp)
    level_mpp = info.level_mpp(level)
    if abs(level_mpp / settings.target_mpp - 1.0) <= settings.mpp_tolerance:
        return level, settings.tile_px
    return level, max(1, round(settings.tile_px * settings.target_mpp / level_mpp))


def _overlap_weights(starts: np.ndarray, stops: np.ndarray, n_cells: int) -> np.ndarray:
    """(len(starts), n_cells) length of overlap of each interval [start, stop) with cell [j, j+1)."""
    cells = np.arange(n_cells, dtype=np.float64)
    low = np.maximum(starts[:, None], cells[None, :])
    high = np.minimum(stops[:, None], cells[None, :] + 1.0)
    return np.clip(high - low, 0.0, None)


def mask_fractions(
    mask: TissueMask, x0: np.ndarray, y0: np.ndarray, size_x: np.ndarray, size_y: np.ndarray
) -> np.ndarray:
    """Exact area-weighted tissue fraction of the mask under level-0 rectangles on a lattice.

    ``x0``/``size_x`` describe the columns and ``y0``/``size_y`` the rows; returns (rows, columns).
    Mask pixels are treated as squares of ``mask.downsample`` level-0 pixels; area outside the mask is 0.
    """
    scale = mask.downsample
    weights_x = _overlap_weights(x0 / scale, (x0 + size_x) / scale, mask.mask.shape[1])
    weights_y = _overlap_weights(y0 / scale, (y0 + size_y) / scale, mask.mask.shape[0])
    covered = weights_y @ mask.mask.astype(np.float64) @ weights_x.T
    return covered / np.outer(size_y / scale, size_x / scale)


def build_tile_grid(slide: Slide, mask: TissueMask, settings: TileSettings) -> TileGrid:
    """All whole tiles of the slide at the target resolution, their tissue fraction and keep decision."""
    level, read_px = choose_read_level(slide, settings)
    info = slide.info
    downsample = info.level_downsamples[level]
    level_w, level_h = info.level_dimensions[level]
    columns, rows = level_w // read_px, level_h // read_px
    if columns == 0 or rows == 0:
        raise NoTissueError(
            f"the slide is smaller than one {settings.tile_px} px tile at {settings.target_mpp} um/px",
            slide.path,
            _FIX_NO_TILES,
        )
    xs = np.array([level_to_level0(c * read_px, downsample) for c in range(columns + 1)], dtype=np.int64)
    ys = np.array([level_to_level0(r * read_px, downsample) for r in range(rows + 1)], dtype=np.int64)
    fractions = mask_fractions(
        mask,
        xs[:-1].astype(float),
        ys[:-1].astype(float),
        np.diff(xs).astype(float),
        np.diff(ys).astype(float),
    )
    grid_x, grid_y = np.meshgrid(xs[:-1], ys[:-1])
    coords = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.int64)
    tissue = fractions.ravel()
    return TileGrid(
        coords=coords,
        tile_size_level0=read_px * downsample,
        level=level,
        read_px=read_px,
        tile_px=settings.tile_px,
        tissue_fraction=tissue,
        keep=tissue > settings.min_mask_fraction,
        grid_shape=(rows, columns),
        target_mpp=settings.target_mpp,
        level_mpp=info.level_mpp(level),
        level_downsample=downsample,
        mpp=info.mpp,
        mpp_source=info.mpp_source,
        mask_threshold=mask.threshold,
    )


def pixel_tissue_fraction(tile: np.ndarray, mask_threshold: float) -> float:
    """Share of a tile's pixels whose HSV saturation is above the slide's tissue threshold."""
    return float((saturation(tile) > mask_threshold).mean())


def tile_passes_pixel_check(tile: np.ndarray, mask_threshold: float, settings: TileSettings) -> bool:
    """False for a blank tile (too few saturated pixels) or a low-contrast one (skimage, as SEQUOIA)."""
    if settings.reject_low_contrast and is_low_contrast(tile):
        return False
    return pixel_tissue_fraction(tile, mask_threshold) > settings.min_tissue_fraction


def select_tiles(slide: Slide, grid: TileGrid, settings: TileSettings) -> TileGrid:
    """Read the kept tiles and also drop blank / low-contrast ones; raises NoTissueError if none is left."""
    keep = grid.keep.copy()
    for batch in iter_tile_batches(slide, grid, grid.kept_indices, settings):
        for index, tile in zip(batch.indices, batch.pixels, strict=True):
            keep[index] = tile_passes_pixel_check(tile, grid.mask_threshold, settings)
    if not keep.any():
        raise NoTissueError(
            f"no tile at {grid.target_mpp} um/px holds enough tissue "
            f"({grid.n_tiles} tiles, {int(grid.keep.sum())} passed the tissue mask)",
            slide.path,
            _FIX_NO_TILES,
        )
    return dataclasses.replace(grid, keep=keep, pixel_checked=True)
