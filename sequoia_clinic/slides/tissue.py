"""Tissue detection on a low-resolution picture of the slide (about 8 um/px by default).

The recipe follows the SEQUOIA preprocessing (``patch_gen_hdf5.py``) with CLAM's smoothing:
a pixel is tissue when its HSV saturation, median-filtered (CLAM, kernel 7), is above a threshold (Otsu,
never below ``saturation_floor`` so that a blank slide is not split into noise), it is not bright in all
three channels (each channel above its own Otsu threshold), and R, G and B all exceed ``min_rgb`` (drops
black pen, scanner borders and padding). The mask is then closed: dilated ``morphology_iterations`` times,
then eroded as many times (SEQUOIA uses 3 and 3).

Memory does not grow with the slide: the picture is never held whole. It is read in horizontal strips
(their height set by the byte budget ``STRIP_BYTES``), twice:

1. each strip, with the median filter's radius of extra rows above and below (the halo), adds to 256-bin
   histograms of the filtered saturation and of R, G and B over the valid pixels; Otsu's threshold of a
   histogram is skimage's ``threshold_otsu`` of the values themselves (it histograms uint8 data the same
   way; :func:`otsu_from_histogram` does the same arithmetic without importing skimage);
2. each strip is masked with a halo of ``median radius + 2 x morphology_iterations`` rows: a mask row
   depends on saturation at most that far away (the median filter reads 3 rows each way, each dilation
   and each erosion with the cross one more), so once the halo is cut off, the strip's rows are exactly
   those of the whole-picture computation. Halo rows only exist inside the picture; at the picture's
   true top and bottom the strip ends there, so Pillow's edge handling and scipy's borders (0 for
   dilation, 1 for erosion; :func:`close_mask` does what scipy does) act as they would on the whole picture. This pass needs only whether the
   filtered saturation exceeds the threshold, which a count of the window's values above it decides
   exactly (:func:`_median_above`), so the slow median filter runs once per pixel, as before.

The mask is kept bit-packed (one bit per pixel, ``numpy.packbits`` along rows): 3 MB for the 5000 x 5000
mask of an 80,000 px square slide. :attr:`TissueMask.mask` unpacks it; :meth:`TissueMask.rows` unpacks a
band of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sequoia_clinic.errors import NoTissueError
from sequoia_clinic.settings import TissueSettings
from sequoia_clinic.slides.base import Slide

_LEVEL_TOLERANCE = 0.1  # a level up to 10 % finer than mask_mpp still counts as "at mask resolution"

# Working memory of one strip of the mask picture. A strip row of width W costs about
# ``_BYTES_PER_PIXEL * W`` bytes while it is processed: the RGB rows read ahead (3 B/px, up to two blocks),
# Pillow's copies for the HSV conversion and the median filter (4 + 3 + 2 B/px), the uint8 and bool planes
# (saturation, window counts, valid, bright, mask: ~6 B/px) and the closing's padded copies (~4 B/px).
# 8 MiB gives about 64 rows of a 5000 px wide picture (an 80,000 px slide at 8 um/px) and never fewer than
# one row. The picture is read a stored tile row at a time when that fits the budget (3 B/px).
STRIP_BYTES = 8 << 20
_BYTES_PER_PIXEL = 26

RowReader = Callable[[int, int], np.ndarray]  # rows [start, stop) of the picture: (stop - start, W, 3) uint8


@dataclass(frozen=True, eq=False)
class TissueMask:
    """Boolean tissue mask; pixel (row, col) covers level-0 pixels [col*ds, (col+1)*ds) x [row*ds, ...).

    Stored packed, eight pixels a byte (``np.packbits`` of each row); :meth:`from_bool` packs a bool array.
    """

    packed: np.ndarray = field(repr=False)  # uint8 (H, ceil(W / 8)): np.packbits of each row
    shape: tuple[int, int]  # (H, W) of the mask
    downsample: float  # level-0 pixels per mask pixel
    threshold: float  # saturation threshold used (0-255)
    tissue_fraction: float  # fraction of mask pixels that are tissue
    level: int = 0  # pyramid level the mask image was read from
    mpp: float = 0.0  # um per mask pixel

    def __post_init__(self) -> None:
        height, width = self.shape
        if self.packed.dtype != np.uint8 or self.packed.shape != (height, -(-width // 8)):
            raise ValueError(
                f"packed rows {self.packed.dtype} {self.packed.shape} do not fit a {self.shape} mask"
            )

    @classmethod
    def from_bool(
        cls,
        mask: np.ndarray,
        downsample: float,
        threshold: float,
        tissue_fraction: float,
        level: int = 0,
        mpp: float = 0.0,
    ) -> TissueMask:
        """A mask from a bool (H, W) array."""
        flags = np.asarray(mask, dtype=bool)
        if flags.ndim != 2:
            raise ValueError(f"a tissue mask is 2-D, got shape {flags.shape}")
        shape = (int(flags.shape[0]), int(flags.shape[1]))
        return cls(np.packbits(flags, axis=1), shape, downsample, threshold, tissue_fraction, level, mpp)

    @property
    def mask(self) -> np.ndarray:
        """The whole mask as a bool (H, W) array, unpacked on each access (keep it if used repeatedly)."""
        return self.rows(0, self.shape[0])

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Bool (rows, W) array of mask rows ``start:stop`` (clipped to the mask)."""
        return np.unpackbits(self.packed[start:stop], axis=1, count=self.shape[1]).view(bool)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (0-255, uint8) of an RGB uint8 image (Pillow's HSV conversion)."""
    return np.asarray(Image.fromarray(rgb).convert("HSV"))[..., 1]


def median_filter_uint8(values: np.ndarray, size: int) -> np.ndarray:
    """Pillow's ``MedianFilter(size)`` of a 2-D uint8 array (edges replicated), bit for bit.

    Written out because Pillow's rank filter sorts every window in C while holding the GIL (~130 ns a
    pixel, most of a tissue mask's time) and no other installed library has an exact uint8 median that
    fast without importing scipy. The median of a window of ``n = size**2`` values (Pillow's rank ``n // 2``
    counted from the smallest) is the largest ``m`` that at least ``n - n // 2`` of them reach. Its 8 bits
    are found from the top: a bit is kept when enough window values reach the candidate with that bit
    set, counted over the ``n`` shifted views of the edge-padded array: whole-array compares and adds,
    no per-pixel sort (~8x faster). ``tests/test_tissue_strips.py`` compares it with Pillow.
    """
    radius = size // 2
    height, width = values.shape
    padded = np.pad(values, radius, mode="edge")
    views = [padded[dy : dy + height, dx : dx + width] for dy in range(size) for dx in range(size)]
    needed = size * size - size * size // 2
    count_type = np.uint8 if size * size <= 255 else np.uint32
    median = np.zeros((height, width), dtype=np.uint8)
    counts = np.empty((height, width), dtype=count_type)
    for bit in range(7, -1, -1):
        candidate = median | np.uint8(1 << bit)
        counts.fill(0)
        for view in views:
            counts += view >= candidate
        np.copyto(median, candidate, where=counts >= needed)
    return median


def _median_saturation(rgb: np.ndarray, size: int) -> np.ndarray:
    return median_filter_uint8(saturation(rgb), size)


def otsu_from_histogram(counts: np.ndarray, default: float) -> float:
    """skimage's ``threshold_otsu`` of the uint8 values counted in ``counts`` (256 bins); ``default`` when
    there are no values or only one distinct value.

    The same arithmetic as ``skimage.filters.threshold_otsu(hist=...)`` (trimmed empty end bins, float32
    counts, the between-class variance of each cut), written out here because importing
    ``skimage.filters`` pulls in ``scipy.ndimage``: ~0.2 s of an ``inspect`` that must start in under 1 s.
    ``tests/test_tissue_strips.py`` compares it with skimage on hundreds of histograms.
    """
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts)
    if present.size <= 1:
        return default
    start, end = int(present[0]), int(present[-1]) + 1
    weights = counts[start:end].astype(np.float32)
    centers = np.arange(start, end, dtype=np.int64)
    weight1 = np.cumsum(weights)
    weight2 = np.cumsum(weights[::-1])[::-1]
    mean1 = np.cumsum(weights * centers) / weight1
    mean2 = (np.cumsum((weights * centers)[::-1]) / weight2[::-1])[::-1]
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centers[int(np.argmax(variance12))])


def _cross_step(mask: np.ndarray, border: bool, combine: Callable[..., np.ndarray]) -> np.ndarray:
    """One dilation (``np.logical_or``, border False) or erosion (``np.logical_and``, border True) with
    the 4-neighbour cross, outside pixels taken as ``border``: ``scipy.ndimage.binary_dilation`` /
    ``binary_erosion`` with their default structure, one iteration (hand-written for the same start-up
    reason as :func:`otsu_from_histogram`; the tests compare with scipy)."""
    padded = np.pad(mask, 1, constant_values=border)
    out = combine(padded[1:-1, 1:-1], padded[:-2, 1:-1])
    for neighbour in (padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        combine(out, neighbour, out=out)
    return out


def close_mask(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Dilate ``iterations`` times (outside = 0), then erode as many times (outside = 1), with the cross."""
    for _ in range(iterations):
        mask = _cross_step(mask, False, np.logical_or)
    for _ in range(iterations):
        mask = _cross_step(mask, True, np.logical_and)
    return mask


def strip_rows(width: int, budget: int = STRIP_BYTES) -> int:
    """Rows per strip of a ``width`` px picture within ``budget`` bytes (at least one)."""
    return max(1, budget // (max(1, width) * _BYTES_PER_PIXEL))


def _median_above(sat: np.ndarray, size: int, threshold: float) -> np.ndarray:
    """``median_filter(sat) > threshold`` without the median: where more than half the window exceeds it.

    The median of the ``size`` x ``size`` window (Pillow's MedianFilter: rank ``size**2 // 2``, edges
    replicated) exceeds ``threshold`` exactly when at most ``size**2 // 2`` window values do not, i.e. when
    at least ``size**2 - size**2 // 2`` do. The count is a box sum (edges replicated as Pillow does).
    """
    radius = size // 2
    dtype = np.uint8 if size * size <= 255 else np.uint32
    above = np.pad((sat > threshold).astype(dtype), radius, mode="edge")
    height, width = sat.shape
    rows = above[:height].copy()
    for shift in range(1, size):
        rows += above[shift : shift + height]
    counts = rows[:, :width].copy()
    for shift in range(1, size):
        counts += rows[:, shift : shift + width]
    return counts >= size * size - size * size // 2


def _strips(
    read_rows: RowReader, height: int, rows: int, halo: int, block: int
) -> Iterator[tuple[np.ndarray, int, int, int]]:
    """(chunk, top, start, stop) for each strip ``start:stop`` of ``rows`` picture rows.

    ``chunk`` holds picture rows ``top:`` up to ``halo`` rows below ``stop`` (fewer at the picture's end),
    from ``halo`` rows above ``start`` (fewer at its top). Every picture row is read once, in blocks of
    ``block`` rows from row 0 (a stored tile row, so that no stored tile is decoded twice).
    """
    blocks: list[tuple[int, np.ndarray]] = []  # (first picture row, rows) read and still needed
    read = 0
    for start in range(0, height, rows):
        stop = min(start + rows, height)
        low, high = max(0, start - halo), min(height, stop + halo)
        blocks = [(first, pixels) for first, pixels in blocks if first + pixels.shape[0] > low]
        while read < high:
            block_rows = min(block, height - read)
            pixels = read_rows(read, read + block_rows)
            if pixels.shape[0] != block_rows:
                raise RuntimeError(f"read {pixels.shape[0]} picture rows at row {read}")  # a bug
            blocks.append((read, pixels))
            read += block_rows
        parts = [pixels[max(low - first, 0) : high - first] for first, pixels in blocks if first < high]
        yield (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)), low, start, stop


@dataclass(frozen=True)
class _Thresholds:
    saturation: float
    channels: tuple[float, float, float]


def _thresholds(
    read_rows: RowReader, height: int, rows: int, block: int, settings: TissueSettings
) -> _Thresholds:
    """Pass 1: the saturation and channel thresholds, from histograms accumulated strip by strip."""
    otsu_saturation = settings.saturation_threshold is None
    radius = settings.median_blur // 2 if otsu_saturation else 0
    sat_counts = np.zeros(256, dtype=np.int64)
    channel_counts = np.zeros((3, 256), dtype=np.int64)
    for chunk, top, start, stop in _strips(read_rows, height, rows, radius, block):
        rgb = chunk[start - top : stop - top]
        valid = (rgb > settings.min_rgb).all(axis=2)
        for channel in range(3):
            channel_counts[channel] += np.bincount(rgb[..., channel][valid], minlength=256)
        if otsu_saturation:
            sat = _median_saturation(chunk, settings.median_blur)[start - top : stop - top]
            sat_counts += np.bincount(sat[valid], minlength=256)
    if settings.saturation_threshold is not None:
        threshold = float(settings.saturation_threshold)
    else:
        threshold = max(otsu_from_histogram(sat_counts, 255.0), float(settings.saturation_floor))
    first, second, third = (otsu_from_histogram(counts, 255.0) for counts in channel_counts)
    return _Thresholds(threshold, (first, second, third))


def _mask_chunk(rgb: np.ndarray, thresholds: _Thresholds, settings: TissueSettings) -> np.ndarray:
    """The closed mask of a block of whole picture rows (exact away from its cut edges, see the module)."""
    valid = (rgb > settings.min_rgb).all(axis=2)
    bright = np.ones(valid.shape, dtype=bool)
    for channel in range(3):
        bright &= rgb[..., channel] > thresholds.channels[channel]
    mask = _median_above(saturation(rgb), settings.median_blur, thresholds.saturation)
    mask &= ~bright
    mask &= valid
    del valid, bright
    iterations = settings.morphology_iterations
    if iterations > 0 and mask.any():  # an empty mask stays empty: closing it changes nothing
        mask = close_mask(mask, iterations)
    return mask


def tissue_from_rows(
    read_rows: RowReader,
    height: int,
    width: int,
    settings: TissueSettings,
    strip_bytes: int = STRIP_BYTES,
    block: int = 0,
) -> tuple[np.ndarray, float, int]:
    """(packed mask rows, saturation threshold, tissue pixel count) of a ``height`` x ``width`` picture.

    ``read_rows(start, stop)`` returns picture rows; each is asked for twice (once per pass), in blocks of
    ``block`` rows (a stored tile row; default: one strip). Strips are ``strip_rows(width, strip_bytes)``
    rows high. Same result as :func:`tissue_from_rgb` on the whole picture, bit for bit.
    """
    packed = np.zeros((height, -(-width // 8)), dtype=np.uint8)
    if height == 0 or width == 0:
        fixed = settings.saturation_threshold
        return packed, (255.0 if fixed is None else float(fixed)), 0
    rows = strip_rows(width, strip_bytes)
    block = block if block > 0 else rows
    thresholds = _thresholds(read_rows, height, rows, block, settings)
    halo = settings.median_blur // 2 + 2 * max(0, settings.morphology_iterations)
    count = 0
    for chunk, top, start, stop in _strips(read_rows, height, rows, halo, block):
        mask = _mask_chunk(chunk, thresholds, settings)[start - top : stop - top]
        count += int(np.count_nonzero(mask))
        packed[start:stop] = np.packbits(mask, axis=1)
    return packed, thresholds.saturation, count


def tissue_from_rgb(
    rgb: np.ndarray, settings: TissueSettings, strip_bytes: int = STRIP_BYTES
) -> tuple[np.ndarray, float]:
    """(mask, saturation threshold) for an RGB uint8 picture of a slide. Pure function of its inputs."""
    height, width = rgb.shape[:2]
    packed, threshold, _ = tissue_from_rows(lambda a, b: rgb[a:b], height, width, settings, strip_bytes)
    return np.unpackbits(packed, axis=1, count=width).view(bool), threshold


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


def compute_tissue_mask(slide: Slide, settings: TissueSettings, strip_bytes: int = STRIP_BYTES) -> TissueMask:
    """Tissue mask of ``slide``; raises :class:`NoTissueError` when nothing looks like tissue.

    The picture (``slide.read_level_downscaled(level, factor)``) is read strip by strip, never whole.
    """
    level, factor = mask_level(slide, settings.mask_mpp)
    level_w, level_h = slide.info.level_dimensions[level]
    height, width = -(-level_h // factor), -(-level_w // factor)
    # Read a stored tile row at a time (when it fits the budget): strips may be thinner, but no stored
    # tile is decoded twice in a pass.
    tile_h = slide.native_tile_size(level)[1]
    block = -(-tile_h // factor)
    if block * width * 3 > strip_bytes:
        block = 0

    def read_rows(start: int, stop: int) -> np.ndarray:
        return slide.read_level_downscaled_rows(level, factor, start, stop)

    packed, threshold, count = tissue_from_rows(read_rows, height, width, settings, strip_bytes, block)
    fraction = count / (height * width) if height * width else 0.0  # == mask.mean(), exactly
    if fraction == 0.0:
        raise NoTissueError(
            "no tissue was found on the slide",
            slide.path,
            "Check that this is a stained H&E slide; if the stain is very pale, lower the saturation threshold.",
        )
    return TissueMask(
        packed,
        (height, width),
        downsample=slide.info.level_downsamples[level] * factor,
        threshold=threshold,
        tissue_fraction=fraction,
        level=level,
        mpp=slide.info.level_mpp(level) * factor,
    )
