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
2. The pixel check (:func:`passes_pixel_check`) keeps a tile when more than ``min_tissue_fraction`` of its
   pixels are tissue (Pillow HSV saturation above the slide's mask threshold; SEQUOIA: > 20 % after
   re-masking the tile) and, with ``reject_low_contrast``, skimage's ``is_low_contrast`` is false (as
   SEQUOIA). SEQUOIA re-masks each tile with its own Otsu threshold, which makes its 20 % relative (a blank
   tile still splits in two); we use the slide's threshold instead so that the 20 % means tissue.
The decisive test runs on full-resolution pixels, so an SVS and its DICOM conversion (identical level 0,
lossy lower levels) get the same kept tiles even though their low-resolution masks differ slightly.

The pixel check is vectorised over a batch of uint8 tiles and gives the same decisions as the per-tile
Pillow/skimage code (:func:`tile_passes_pixel_check`), without a float colour conversion: the saturation
test is integer arithmetic (Pillow's saturation is ``trunc(float32((max - min) / max) * 255)``, so it reaches
an integer t exactly when ``255 (max - min) >= t max`` for every colour but black; that rule is checked
against a table made by Pillow itself, ties included, and ties are looked up in it should a Pillow version
round one down), and the contrast test decides from bounds on an integer luminance whenever they settle it,
calling skimage only for the rare tile they do not (see :func:`_low_contrast`).

:class:`TileSelection` checks candidate tiles in a given order and stops once ``max_keep`` passed; the
pixels of the tiles that pass are handed on as they are found (the encoder's input), so a used tile is
decoded once. Decoding (the tile reader's thread pool) and checking overlap: each batch is checked while
the next one is decoded, and the next chunk is selected while the caller handles one. Each round of
candidates is read in grid order so that neighbouring tiles share decoded stored tiles.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from skimage.exposure import is_low_contrast

from sequoia_clinic.errors import NoTissueError, SlideFormatError
from sequoia_clinic.settings import TileSettings
from sequoia_clinic.slides.base import Slide, level_to_level0
from sequoia_clinic.slides.grid import TileGrid
from sequoia_clinic.slides.tile_reader import TileBatch, TileReader
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


_FRACTION_BYTES = 4 << 20  # working memory of mask_fractions: the mask rows of a band of tile rows, unpacked


def _overlap_band(starts: np.ndarray, stops: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """(cells, weights), both (len(starts), K): the cells each interval [start, stop) overlaps and by how much.

    ``weights[i, k]`` is the length of the overlap of interval i with cell ``cells[i, k]`` (0 for the
    padding of shorter intervals and for cells outside ``[0, n_cells)``, whose index is clamped into it);
    each weight is computed as the dense overlap-matrix formula would, so the nonzero ones are identical.
    """
    first = np.clip(np.floor(starts), 0, n_cells).astype(np.int64)
    last = np.clip(np.ceil(stops), 0, n_cells).astype(np.int64)
    width = max(1, int((last - first).max(initial=0)))
    cells = first[:, None] + np.arange(width, dtype=np.int64)[None, :]
    position = cells.astype(np.float64)
    low = np.maximum(starts[:, None], position)
    high = np.minimum(stops[:, None], position + 1.0)
    weights = np.clip(high - low, 0.0, None)
    weights[cells >= n_cells] = 0.0
    return np.minimum(cells, max(n_cells - 1, 0)), weights


def mask_fractions(
    mask: TissueMask, x0: np.ndarray, y0: np.ndarray, size_x: np.ndarray, size_y: np.ndarray
) -> np.ndarray:
    """Exact area-weighted tissue fraction of the mask under level-0 rectangles on a lattice.

    ``x0``/``size_x`` describe the columns and ``y0``/``size_y`` the rows; returns (rows, columns).
    Mask pixels are treated as squares of ``mask.downsample`` level-0 pixels; area outside the mask is 0.

    Computed a band of lattice rows at a time (within ``_FRACTION_BYTES``) from the mask rows under it, with
    the few overlap weights of each row and column (not dense rows x mask matrices), so memory does not
    grow with the slide. Each fraction is (sum over mask rows of row weight x mask) summed over mask
    columns with the column weights, divided by the rectangle's area in mask pixels.
    """
    scale = mask.downsample
    height, width = mask.shape
    denominator_x = size_x / scale
    fractions = np.zeros((y0.size, x0.size), dtype=np.float64)
    if height == 0 or width == 0 or fractions.size == 0:
        return fractions / np.outer(size_y / scale, denominator_x)
    row_cells, row_weights = _overlap_band(y0 / scale, (y0 + size_y) / scale, height)
    col_cells, col_weights = _overlap_band(x0 / scale, (x0 + size_x) / scale, width)
    per_row = max(1, _FRACTION_BYTES // (width * (17 + row_cells.shape[1])))  # lattice rows per band
    for begin in range(0, y0.size, per_row):
        end = min(begin + per_row, y0.size)
        cells, weights = row_cells[begin:end], row_weights[begin:end]
        top = int(cells.min())
        rows = mask.rows(top, int(cells.max()) + 1)
        partial = np.zeros((end - begin, width), dtype=np.float64)  # row-weighted mask sums per column
        for k in range(cells.shape[1]):
            partial += weights[:, k, None] * rows[cells[:, k] - top]
        del rows
        covered = np.zeros((end - begin, x0.size), dtype=np.float64)
        for k in range(col_cells.shape[1]):
            covered += partial[:, col_cells[:, k]] * col_weights[None, :, k]
        fractions[begin:end] = covered / np.outer(size_y[begin:end] / scale, denominator_x)
    return fractions


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
        level_size=(level_w, level_h),
    )


# ---- the pixel check -------------------------------------------------------------------------------------
# Luminance as skimage's rgb2gray (0.2125 R + 0.7154 G + 0.0721 B) scaled to 0..65025, in integers:
# 54 R + 183 G + 18 B differs from 65025 * gray by 0.1875 R - 0.573 G + 0.3855 B, at most 146.2 either way.
_LUMA = (54, 183, 18)
_LUMA_ERROR = 146.2
_LUMA_FULL = 65025  # 255 * 255: luminance 1.0
_CONTRAST_RANGE = 0.1  # skimage: low contrast when (p99 - p1) / (1 - (-1)) < 0.05, i.e. p99 - p1 < 0.1
# Key spreads settling the test (see _low_contrast): 6209 + 2 * 146.2 < 6502.5 < 6800 - 2 * 146.2.
_NARROW = 6209  # max - min of the key at most this: surely low contrast
_GAP = 6800  # this many keys between 1 % of the pixels and another 1 %: surely not low contrast
_CHECK_BLOCK = 8  # tiles checked together (about 0.5 MB of planes: cache-sized, measured fastest)


def tile_passes_pixel_check(tile: np.ndarray, mask_threshold: float, settings: TileSettings) -> bool:
    """False for a blank tile (too few saturated pixels) or a low-contrast one (skimage, as SEQUOIA)."""
    return bool(passes_pixel_check(tile[None], mask_threshold, settings)[0])


@functools.cache
def _saturation_table() -> np.ndarray:
    """(256, 256) uint8: Pillow's HSV saturation of a pixel whose channel maximum is i and minimum j <= i."""
    high, low = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    low = np.minimum(low, high)  # entries with j > i are never looked up
    return saturation(np.stack([high, low, low], axis=-1).astype(np.uint8))


@functools.cache
def _ties_round_up(least: int) -> bool:
    """Whether "saturation >= least" is exactly ``255 (max - min) >= least * max`` for every colour but black.

    Pillow computes ``trunc(float32((max - min) / max) * 255)``: where the two sides differ the integer test
    is exact; where they are equal, float rounding decides. This checks the whole table once per threshold.
    """
    high, low = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    valid = (low <= high) & (high > 0)
    rule = 255 * (high - low) >= least * high
    return bool(np.array_equal(rule[valid], (_saturation_table() >= least)[valid]))


def _count_true(flags: np.ndarray) -> np.ndarray:
    """Per row, the number of True entries of a C-contiguous (n, P) bool array."""
    n, size = flags.shape
    if size % 128 == 0:  # add 16 blocks of 8-byte words: each byte then counts at most 16 ones, no carries
        words = flags.view(np.uint64).reshape(n, 16, -1).sum(axis=1)
        return words.view(np.uint8).reshape(n, -1).sum(axis=1, dtype=np.int64)
    return flags.view(np.uint8).sum(axis=1, dtype=np.uint32).astype(np.int64)


def _saturated_counts(high: np.ndarray, low: np.ndarray, threshold: float) -> np.ndarray:
    """Per tile, the pixels whose Pillow saturation exceeds ``threshold``; ``high``/``low``: (n, P) channel max/min.

    An integer saturation exceeds ``threshold`` when it is at least ``least = floor(threshold) + 1``, that is
    when ``255 (max - min) >= least * max`` (:func:`_ties_round_up`; black pixels, 0 >= 0, have saturation
    0 and are taken off). Should a Pillow version round some tie down, every tie is looked up in the table.
    """
    n, size = high.shape
    least = math.floor(threshold) + 1  # an integer saturation exceeds threshold iff it is >= this
    if least <= 0:
        return np.full(n, size, dtype=np.int64)
    if least > 255:
        return np.zeros(n, dtype=np.int64)
    spread = np.subtract(high, low).astype(np.uint16)
    spread *= 255
    bound = high.astype(np.uint16)
    bound *= least
    if not _ties_round_up(least):
        above = spread > bound
        ties = np.nonzero(spread == bound)
        above[ties] = _saturation_table()[high[ties], low[ties]] >= least
        return _count_true(above)
    counts = _count_true(spread >= bound)
    for k in np.flatnonzero(high.min(axis=1) == 0):  # black pixels passed 0 >= 0
        counts[k] -= np.count_nonzero(high[k] == 0)
    return counts


def _low_contrast(planes: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    """skimage ``is_low_contrast`` of each tile (defaults: 1st/99th percentile, 5 %), mostly without it.

    ``planes`` (3, n, P) are the tiles' R, G, B planes, ``tiles`` (n, H, W, 3) the same pixels. skimage takes
    the float luminance ``gray`` (rgb2gray), numpy's linear percentiles p1 (between the sorted values at
    ranks ``floor(0.01 (P-1))`` and the next) and p99 (from rank ``floor(0.99 (P-1))``) and calls the tile low
    contrast when p99 - p1 < 0.1. With the integer luminance ``key`` (within 146.2 of 65025 gray):

    * max(key) - min(key) <= 6209 bounds p99 - p1 below (6209 + 2 * 146.2) / 65025 < 0.09999: low contrast;
    * at least rank+2 pixels with ``key <= a`` and at least P - rank99 with ``key >= a + 6800`` bound
      p99 - p1 above (6800 - 2 * 146.2) / 65025 > 0.10008: not low contrast (``a`` = mean key - 3400).

    Both margins (>1e-5) are far above float rounding; any tile neither bound settles is given to skimage.
    """
    _, n, size = planes.shape
    key = planes[0].astype(np.uint16)
    key *= _LUMA[0]
    for plane, weight in zip(planes[1:], _LUMA[1:], strict=True):
        part = plane.astype(np.uint16)
        part *= weight
        key += part
    low_rank = int(np.floor((size - 1) * 0.01))
    high_rank = int(np.floor((size - 1) * 0.99))
    need_below, need_above = min(low_rank + 2, size), size - high_rank
    spread = key.max(axis=1).astype(np.int64) - key.min(axis=1)
    surely_low = spread <= _NARROW
    # Where the two pixel groups are split does not affect soundness: a subsample's mean will do.
    split = key[:, ::64].mean(axis=1).astype(np.int64) - _GAP // 2
    usable = (split >= 0) & (split + _GAP <= _LUMA_FULL)
    lower = np.clip(split, 0, _LUMA_FULL).astype(np.uint16)
    upper = np.clip(split + _GAP, 0, _LUMA_FULL).astype(np.uint16)
    below = _count_true(key <= lower[:, None])
    above = _count_true(key >= upper[:, None])
    surely_high = usable & (below >= need_below) & (above >= need_above)

    result = surely_low.copy()
    for k in np.flatnonzero(~surely_low & ~surely_high):
        result[k] = bool(is_low_contrast(tiles[k]))
    return result


def passes_pixel_check(pixels: np.ndarray, mask_threshold: float, settings: TileSettings) -> np.ndarray:
    """(n,) bool: :func:`tile_passes_pixel_check` for each tile of a (n, H, W, 3) uint8 batch, vectorised.

    Tiles are processed a few at a time (``_CHECK_BLOCK``) so that the intermediate planes stay in cache.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"expected uint8 tiles (n, H, W, 3), got {pixels.dtype} {pixels.shape}")
    keep = np.zeros(pixels.shape[0], dtype=bool)
    for start in range(0, pixels.shape[0], _CHECK_BLOCK):
        keep[start : start + _CHECK_BLOCK] = _check_block(
            pixels[start : start + _CHECK_BLOCK], mask_threshold, settings
        )
    return keep


def _check_block(pixels: np.ndarray, mask_threshold: float, settings: TileSettings) -> np.ndarray:
    n = pixels.shape[0]
    planes = np.ascontiguousarray(np.moveaxis(pixels, 3, 0)).reshape(3, n, -1)
    high = np.maximum(np.maximum(planes[0], planes[1]), planes[2])
    low = np.minimum(np.minimum(planes[0], planes[1]), planes[2])
    share = _saturated_counts(high, low, mask_threshold) / planes.shape[2]
    keep = share > settings.min_tissue_fraction  # the same float division and comparison as mean() > x
    if settings.reject_low_contrast and keep.any():
        candidates = np.flatnonzero(keep)
        keep[candidates] = ~_low_contrast(planes[:, candidates], pixels[candidates])
    return keep


# ---- selection -------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SelectedChunk:
    """One chunk of checked candidates: their pixels and which passed (the passing ones are the encoder's input)."""

    checked: np.ndarray  # (m,) grid indices checked, in reading order
    passed: np.ndarray  # (m,) bool: passed the pixel check
    tiles: np.ndarray  # (m, tile_px, tile_px, 3) uint8: the pixels of every checked tile

    @property
    def indices(self) -> np.ndarray:
        """Grid indices of the tiles that passed, in reading order."""
        return self.checked[self.passed]


def full_batches(chunks: Iterable[SelectedChunk], size: int) -> Iterator[list[TileBatch]]:
    """The passing tiles of consecutive chunks in batches of exactly ``size`` (only the last may be smaller),
    in reading order; one list of batches per chunk, as soon as they are complete (empty lists are skipped).

    A chunk's passing count varies, so batching chunk by chunk gave ~25 different batch sizes on one slide:
    half-empty batches, and a new set of oneDNN kernels (compiled and cached) for each size. The tiles left
    over from a chunk (fewer than ``size``) are copied, so a chunk's pixel buffer is freed with its chunk;
    a batch of consecutive rows is a view of the chunk's pixels, otherwise a copy.
    """
    size = max(1, size)
    held_indices = np.zeros(0, dtype=np.int64)
    held_pixels: np.ndarray | None = None
    for chunk in chunks:
        rows = np.flatnonzero(chunk.passed)
        ready: list[TileBatch] = []
        start = 0
        if held_pixels is not None:
            start = min(size - held_indices.size, rows.size)
            part = rows[:start]
            held_indices = np.concatenate([held_indices, chunk.checked[part]])
            held_pixels = np.concatenate([held_pixels, chunk.tiles[part]])
            if held_indices.size == size:
                ready.append(TileBatch(held_indices, held_pixels))
                held_indices, held_pixels = np.zeros(0, dtype=np.int64), None
        while rows.size - start >= size:
            part = rows[start : start + size]
            contiguous = part[-1] - part[0] + 1 == size
            pixels = chunk.tiles[part[0] : part[-1] + 1] if contiguous else chunk.tiles[part]
            ready.append(TileBatch(chunk.checked[part], pixels))
            start += size
        if start < rows.size:  # fancy indexing copies: the chunk's buffer is not held
            held_indices, held_pixels = chunk.checked[rows[start:]], chunk.tiles[rows[start:]]
        if ready:
            yield ready
    if held_pixels is not None:
        yield [TileBatch(held_indices, held_pixels)]


class TileSelection:
    """Checks candidate tiles in ``order`` until ``max_keep`` passed (or the candidates run out).

    The result is exactly the first ``max_keep`` tiles of ``order`` that pass the pixel check (all that
    pass, when fewer do), found in rounds: each round takes the next ``max_keep - found`` tiles of ``order``,
    so every tile that passes in it is used and nothing past the cap is checked. A round is read in grid
    order (stored tiles shared by neighbours are decoded once) and in chunks of ``chunk_tiles``. Of the
    ``read_threads``, one checks (the selection's thread) and the others decode.

    Iterate :meth:`chunks` for the passing tiles and their pixels, then call :meth:`result` for the grid.
    """

    def __init__(
        self,
        slide: Slide,
        grid: TileGrid,
        order: np.ndarray,
        max_keep: int,
        settings: TileSettings,
        chunk_tiles: int | None = None,
    ) -> None:
        if max_keep < 1:
            raise ValueError(f"max_keep must be >= 1, got {max_keep}")
        self.slide = slide
        self.grid = grid
        self.order = np.asarray(order, dtype=np.int64).reshape(-1)
        if self.order.size and (self.order.min() < 0 or self.order.max() >= grid.n_tiles):
            raise IndexError(f"tile indices must lie in 0..{grid.n_tiles - 1}")
        self.max_keep = int(max_keep)
        self.settings = settings
        self.batch = max(1, settings.batch_size)
        self.chunk_tiles = max(1, chunk_tiles or 2 * self.batch)
        self._position = 0  # tiles of ``order`` taken into rounds so far
        self._stream: Iterator[tuple[np.ndarray, np.ndarray]] | None = None  # the current round, being read
        self._buffers: deque[tuple[np.ndarray, np.ndarray]] = deque()  # (chunk indices, pixels) being read
        self._passed = np.zeros(grid.n_tiles, dtype=bool)
        self._checked = np.zeros(grid.n_tiles, dtype=bool)
        self.found = 0
        self.decoded_tiles = 0  # output tiles cut from decoded pixels (each once)
        self.native_decodes = 0  # stored tiles decoded (see NativeTileCache.decoded)
        self.seconds = 0.0  # time spent reading and checking

    def _next_round(self) -> np.ndarray:
        """The next ``max_keep - found`` tiles of ``order``, in grid order (empty when done)."""
        deficit = self.max_keep - self.found
        if deficit <= 0 or self._position >= self.order.size:
            return np.zeros(0, dtype=np.int64)
        taken = self.order[self._position : self._position + deficit]
        self._position += taken.size
        return np.sort(taken)

    def _round_batches(self, candidates: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(batch indices, where their pixels go) over a round; each chunk's buffer made when first needed."""
        tile_px = self.grid.tile_px
        for start in range(0, candidates.size, self.chunk_tiles):
            chunk = candidates[start : start + self.chunk_tiles]
            tiles = np.empty((chunk.size, tile_px, tile_px, 3), dtype=np.uint8)
            self._buffers.append((chunk, tiles))
            for row in range(0, chunk.size, self.batch):
                yield chunk[row : row + self.batch], tiles[row : row + self.batch]

    def _next_batch(self, reader: TileReader) -> tuple[np.ndarray, np.ndarray] | None:
        """The next (indices, pixels) of the current round, starting a new round after one ends; None when done."""
        while True:
            if self._stream is None:
                candidates = self._next_round()
                if not candidates.size:
                    return None
                reader.plan(candidates)  # the round's stored tiles can be dropped after their last use
                self._stream = reader.read_batches(self._round_batches(candidates))
            batch = next(self._stream, None)
            if batch is not None:
                return batch
            self._stream = None  # the round ended with its last chunk

    def _select_chunk(self, reader: TileReader) -> SelectedChunk | None:
        """Read and check the next chunk of the current round (or of a new one); None when done.

        One reader pipeline runs through a whole round, so each batch is checked while the next is decoded,
        across chunk boundaries too; a round's size depends on the tiles found before it, so rounds cannot
        overlap.
        """
        started = time.perf_counter()
        batch = self._next_batch(reader)
        if batch is None:
            return None
        candidates, tiles = self._buffers.popleft()  # the chunk this batch belongs to
        passed = np.zeros(candidates.size, dtype=bool)
        row = 0
        while batch is not None:
            indices, pixels = batch
            passed[row : row + indices.size] = passes_pixel_check(
                pixels, self.grid.mask_threshold, self.settings
            )
            row += indices.size
            batch = self._next_batch(reader) if row < candidates.size else None
        if row != candidates.size:
            raise RuntimeError("tile selection lost its place in a round")  # a bug, never the input
        chunk = SelectedChunk(candidates, passed, tiles)
        self.decoded_tiles += candidates.size
        self._checked[candidates] = True
        self._passed[chunk.indices] = True
        self.found += int(passed.sum())
        self.native_decodes = reader.cache.decoded
        self.seconds += time.perf_counter() - started
        return chunk

    def chunks(self, ahead: bool = True) -> Generator[SelectedChunk, None, None]:
        """The chunks with passing tiles, in order.

        ``ahead``: the next chunk is read and checked (in a thread of its own) while the caller uses this one;
        False: only when asked for, for a caller that computes on every core (a CPU encoder).
        """
        # The checks run in the selection's thread: they take one of the ``read_threads``.
        decoding = dataclasses.replace(self.settings, read_threads=max(1, self.settings.read_threads - 1))
        with TileReader(self.slide, self.grid, decoding) as reader:
            if not ahead:
                while (chunk := self._select_chunk(reader)) is not None:
                    if chunk.passed.any():
                        yield chunk
                return
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tile-select") as pool:
                upcoming = pool.submit(self._select_chunk, reader)
                while (chunk := upcoming.result()) is not None:
                    upcoming = pool.submit(self._select_chunk, reader)
                    if chunk.passed.any():
                        yield chunk

    @property
    def complete(self) -> bool:
        """True once the cap is reached or every candidate was checked."""
        return self._stream is None and (self.found >= self.max_keep or self._position >= self.order.size)

    def result(self) -> TileGrid:
        """The grid after the selection; raises NoTissueError when no tile passed.

        ``keep`` marks the tiles that passed and, when the selection stopped at the cap, the candidates
        (``grid.keep``) it never checked, which were not rejected; ``checked`` marks the tiles checked. So
        ``keep.sum()`` estimates the number of tissue tiles and ``keep & checked`` are the passing ones.
        """
        if not self.complete:
            raise RuntimeError("TileSelection.result() before all chunks were read")
        if not self.found:
            raise NoTissueError(
                f"no tile at {self.grid.target_mpp} um/px holds enough tissue "
                f"({self.grid.n_tiles} tiles, {int(self.grid.keep.sum())} passed the tissue mask)",
                self.slide.path,
                _FIX_NO_TILES,
            )
        keep = self._passed | (self.grid.keep & ~self._checked)
        return dataclasses.replace(self.grid, keep=keep, pixel_checked=True, checked=self._checked.copy())


def select_tiles(
    slide: Slide,
    grid: TileGrid,
    settings: TileSettings,
    order: np.ndarray | None = None,
    max_keep: int | None = None,
) -> TileGrid:
    """Check the candidate tiles' pixels and drop blank / low-contrast ones; NoTissueError if none is left.

    By default every candidate (``grid.keep``) is checked; with ``order`` and ``max_keep``, candidates are
    checked in ``order`` until ``max_keep`` passed (see :class:`TileSelection`).
    """
    order = grid.kept_indices if order is None else order
    selection = TileSelection(slide, grid, order, max_keep or max(1, len(order)), settings)
    for _ in selection.chunks():
        pass
    return selection.result()
