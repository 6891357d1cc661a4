"""The strip-wise tissue mask and tile fractions against the whole-picture computation they replaced.

The oracle below is the whole-picture code as it was before the mask was computed in strips (copied, not
imported): read the whole low-resolution picture, Pillow saturation, 7 x 7 median, skimage Otsu on the
values themselves, scipy closing on the whole mask; dense overlap matrices for the tile fractions. The
strip version must give the same mask, thresholds, fraction, grid and kept tiles, with strips forced
down to a few rows so that many strip boundaries are crossed, and its memory must not grow with the
picture's height.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy import ndimage
from skimage.filters import threshold_otsu

from sequoia_clinic.settings import Settings, TissueSettings
from sequoia_clinic.slides import tiling
from sequoia_clinic.slides.base import level_to_level0
from sequoia_clinic.slides.opening import open_slide
from sequoia_clinic.slides.tiling import build_tile_grid, mask_fractions
from sequoia_clinic.slides.tissue import (
    TissueMask,
    close_mask,
    compute_tissue_mask,
    mask_level,
    median_filter_uint8,
    otsu_from_histogram,
    strip_rows,
    tissue_from_rgb,
    tissue_from_rows,
)

SETTINGS = Settings()
TISSUE = SETTINGS.tissue


# -- the oracle: the whole-picture code before strips ----------------------------------------------------
def _oracle_otsu(values: np.ndarray, default: float) -> float:
    if values.size == 0 or values.min() == values.max():
        return default
    return float(threshold_otsu(values))


def _oracle_saturation(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("HSV"))[..., 1]


def oracle_tissue_from_rgb(rgb: np.ndarray, settings: TissueSettings) -> tuple[np.ndarray, float]:
    sat = np.asarray(
        Image.fromarray(_oracle_saturation(rgb)).filter(ImageFilter.MedianFilter(settings.median_blur))
    )
    valid = (rgb > settings.min_rgb).all(axis=2)
    if settings.saturation_threshold is not None:
        threshold = float(settings.saturation_threshold)
    else:
        threshold = max(_oracle_otsu(sat[valid], 255.0), float(settings.saturation_floor))
    bright = np.ones(valid.shape, dtype=bool)
    for channel in range(3):
        values = rgb[..., channel]
        bright &= values > _oracle_otsu(values[valid], 255.0)
    mask = (sat > threshold) & ~bright & valid
    iterations = settings.morphology_iterations
    if iterations > 0 and mask.any():
        mask = ndimage.binary_dilation(mask, iterations=iterations)
        mask = ndimage.binary_erosion(mask, iterations=iterations, border_value=1)
    return mask, threshold


def _oracle_overlap_weights(starts: np.ndarray, stops: np.ndarray, n_cells: int) -> np.ndarray:
    cells = np.arange(n_cells, dtype=np.float64)
    low = np.maximum(starts[:, None], cells[None, :])
    high = np.minimum(stops[:, None], cells[None, :] + 1.0)
    return np.clip(high - low, 0.0, None)


def oracle_mask_fractions(
    mask: np.ndarray, scale: float, x0: np.ndarray, y0: np.ndarray, size_x: np.ndarray, size_y: np.ndarray
) -> np.ndarray:
    weights_x = _oracle_overlap_weights(x0 / scale, (x0 + size_x) / scale, mask.shape[1])
    weights_y = _oracle_overlap_weights(y0 / scale, (y0 + size_y) / scale, mask.shape[0])
    covered = weights_y @ mask.astype(np.float64) @ weights_x.T
    return covered / np.outer(size_y / scale, size_x / scale)


# -- synthetic pictures ------------------------------------------------------------------------------------
def synthetic_picture(seed: int, height: int, width: int) -> np.ndarray:
    """Glass with sensor noise, a few stained blobs of varying saturation, black pen and a white stripe."""
    rng = np.random.default_rng(seed)
    rgb = (235 + rng.integers(-8, 9, size=(height, width, 3))).astype(np.uint8)
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(int(rng.integers(2, 7))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(3, height / 2), rng.uniform(3, width / 2)
        blob = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1
        blob &= rng.random((height, width)) < rng.uniform(0.6, 1.0)  # ragged, holes for the closing
        colour = np.array([rng.integers(120, 220), rng.integers(40, 140), rng.integers(110, 200)])
        rgb[blob] = np.clip(colour + rng.integers(-35, 36, size=(int(blob.sum()), 3)), 0, 255)
    if rng.random() < 0.7:
        pen = np.abs(rows - cols * height / width - rng.uniform(-height, height)) < 2
        rgb[pen] = rng.integers(0, 45, size=3)  # dark: not valid
    if rng.random() < 0.5:
        rgb[:, int(rng.integers(0, width)) :][:, :2] = 255  # a white stripe at the edge of the scan
    return rgb


def _settings_variants() -> list[TissueSettings]:
    return [
        TISSUE,
        dataclasses.replace(TISSUE, morphology_iterations=0),
        dataclasses.replace(TISSUE, morphology_iterations=1, median_blur=5),
        dataclasses.replace(TISSUE, saturation_threshold=30.5),
        dataclasses.replace(TISSUE, median_blur=3, morphology_iterations=4, min_rgb=80),
    ]


def _budget_for_rows(width: int, rows: int) -> int:
    budget = rows * width * 26
    assert strip_rows(width, budget) == rows
    return budget


# -- Otsu from a histogram ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [3, 5, 7])
def test_median_filter_equals_pillow(size):
    rng = np.random.default_rng(size)
    shapes = [(1, 1), (1, 9), (2, 2), (3, 11), (6, 5), (7, 7), (40, 33), (97, 128)]
    for height, width in shapes:
        for values in (
            rng.integers(0, 256, (height, width), dtype=np.uint8),  # every level
            rng.choice(np.array([0, 17, 200, 255], np.uint8), (height, width)),  # ties at the rank
            np.clip(rng.normal(40, 25, (height, width)), 0, 255).astype(np.uint8),  # stain-like
        ):
            expected = np.asarray(Image.fromarray(values).filter(ImageFilter.MedianFilter(size)))
            np.testing.assert_array_equal(median_filter_uint8(values, size), expected)


def test_otsu_from_histogram_equals_skimage_on_the_values():
    rng = np.random.default_rng(7)
    cases = [
        np.zeros(0, np.uint8),  # empty: default
        np.full(50, 17, np.uint8),  # constant: default
        np.full(3, 255, np.uint8),
        np.array([0, 255], np.uint8),
        np.array([3, 3, 4], np.uint8),
        np.array([0, 0, 0, 1], np.uint8),
        np.array([254, 255, 255, 255], np.uint8),
    ]
    for _ in range(200):
        low, high = sorted(rng.integers(0, 256, size=2))
        size = int(rng.integers(1, 5000))
        values = rng.integers(low, high + 1, size=size).astype(np.uint8)
        if rng.random() < 0.5:  # bimodal, like tissue on glass
            values[: size // 3] = rng.integers(0, 40, size=size // 3)
        cases.append(values)
    for values in cases:
        counts = np.bincount(values, minlength=256)
        assert otsu_from_histogram(counts, 255.0) == _oracle_otsu(values, 255.0), values[:10]


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_close_mask_equals_scipy_dilation_then_erosion(iterations):
    rng = np.random.default_rng(11 + iterations)
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(1, 40, size=2))
        mask = rng.random((height, width)) < rng.uniform(0.05, 0.8)
        expected = mask
        if iterations:
            expected = ndimage.binary_dilation(mask, iterations=iterations)
            expected = ndimage.binary_erosion(expected, iterations=iterations, border_value=1)
        np.testing.assert_array_equal(close_mask(mask, iterations), expected)


# -- strips == whole picture -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_strips_equal_the_whole_picture_on_synthetic_pictures(seed):
    rng = np.random.default_rng(1000 + seed)
    height, width = int(rng.integers(15, 160)), int(rng.integers(9, 140))  # odd sizes, some tiny
    rgb = synthetic_picture(seed, height, width)
    for settings in _settings_variants():
        expected, threshold = oracle_tissue_from_rgb(rgb, settings)
        for rows in (1, 5, 7, 13, 20):
            budget = _budget_for_rows(width, rows)
            for block in (0, 3, 16):
                packed, got_threshold, count = tissue_from_rows(
                    lambda a, b: rgb[a:b], height, width, settings, budget, block
                )
                mask = np.unpackbits(packed, axis=1, count=width).view(bool)
                assert got_threshold == threshold
                assert np.array_equal(mask, expected), (settings, rows, block)
                assert count / mask.size == float(expected.mean())
        whole, whole_threshold = tissue_from_rgb(rgb, settings)  # the default budget: one strip here
        assert np.array_equal(whole, expected) and whole_threshold == threshold


def test_strips_cross_tissue_at_every_row():
    """Tissue touching the picture's top and bottom, strips of one to twenty rows."""
    rng = np.random.default_rng(5)
    rgb = synthetic_picture(99, 97, 61)
    rgb[:4] = [180, 70, 150] + rng.integers(-30, 31, size=(4, 61, 3))
    rgb[-3:, 10:40] = [170, 90, 160]
    expected, threshold = oracle_tissue_from_rgb(rgb, TISSUE)
    assert expected[0].any() and expected[-1].any()
    for rows in range(1, 21):
        packed, got, _ = tissue_from_rows(lambda a, b: rgb[a:b], 97, 61, TISSUE, _budget_for_rows(61, rows))
        assert got == threshold
        assert np.array_equal(np.unpackbits(packed, axis=1, count=61).view(bool), expected), rows


def _check_slide(path: Path, rows: int | None) -> None:
    with open_slide(path) as slide:
        level, factor = mask_level(slide, TISSUE.mask_mpp)
        picture = slide.read_level_downscaled(level, factor)
        expected, threshold = oracle_tissue_from_rgb(picture, TISSUE)
        budget = _budget_for_rows(picture.shape[1], rows) if rows else None
        mask = compute_tissue_mask(slide, TISSUE, *([budget] if budget else []))
        assert mask.shape == expected.shape and np.array_equal(mask.mask, expected)
        assert mask.threshold == threshold
        assert mask.tissue_fraction == float(expected.mean())
        assert mask.level == level and mask.downsample == slide.info.level_downsamples[level] * factor

        grid = build_tile_grid(slide, mask, SETTINGS.tiles)
        oracle = TissueMask.from_bool(
            expected, mask.downsample, threshold, float(expected.mean()), level, mask.mpp
        )
        assert np.array_equal(oracle.mask, expected)
        rows_, columns = grid.grid_shape  # the lattice as build_tile_grid lays it out
        xs = np.array([level_to_level0(c * grid.read_px, grid.level_downsample) for c in range(columns + 1)])
        ys = np.array([level_to_level0(r * grid.read_px, grid.level_downsample) for r in range(rows_ + 1)])
        assert np.array_equal(grid.coords[:columns, 0], xs[:-1]) and np.array_equal(
            grid.coords[::columns, 1], ys[:-1]
        )
        xs, ys, span_x, span_y = (
            xs[:-1].astype(float),
            ys[:-1].astype(float),
            np.diff(xs).astype(float),
            np.diff(ys).astype(float),
        )
        reference = oracle_mask_fractions(expected, mask.downsample, xs, ys, span_x, span_y).ravel()
        np.testing.assert_allclose(grid.tissue_fraction, reference, rtol=0, atol=1e-12)
        assert np.array_equal(grid.keep, reference > SETTINGS.tiles.min_mask_fraction)


@pytest.mark.parametrize("rows", [None, 5, 11, 20])
def test_demo_slide_strips_equal_the_whole_picture(cmu_svs, rows):
    _check_slide(cmu_svs, rows)


@pytest.mark.parametrize("rows", [None, 6, 17])
def test_mosaic_pyramid_strips_equal_the_whole_picture(mosaic_pyramid, rows):
    _check_slide(mosaic_pyramid, rows)


def test_downscaled_rows_are_rows_of_the_whole_picture(cmu_svs, mosaic_pyramid):
    for path, levels in ((cmu_svs, ((0, 1), (0, 3), (0, 16))), (mosaic_pyramid, ((1, 1), (1, 7), (0, 16)))):
        with open_slide(path) as slide:
            for level, factor in levels:
                whole = slide.read_level_downscaled(level, factor)
                height = whole.shape[0]
                for start, stop in ((0, 1), (0, 7), (5, 12), (height - 4, height), (height - 1, height + 9)):
                    got = slide.read_level_downscaled_rows(level, factor, start, stop)
                    assert np.array_equal(got, whole[start:stop]), (path.name, level, factor, start, stop)


# -- the tile fractions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_mask_fractions_equal_the_dense_computation(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    flags = rng.random((int(rng.integers(1, 90)), int(rng.integers(1, 90)))) > rng.uniform(0.2, 0.9)
    scale = float(rng.choice([1.0, 7.3, 16.0, 32.0124]))
    tile = float(rng.choice([scale * 0.6, 61.7, 256.0, scale * 17.0]))
    x0 = np.arange(-1, flags.shape[1] * scale / tile + 2) * tile + rng.uniform(-5, 5)
    y0 = np.arange(-1, flags.shape[0] * scale / tile + 2) * tile + rng.uniform(-5, 5)
    size_x, size_y = np.full(x0.size, tile), np.full(y0.size, tile)
    mask = TissueMask.from_bool(flags, downsample=scale, threshold=0, tissue_fraction=float(flags.mean()))
    expected = oracle_mask_fractions(flags, scale, x0, y0, size_x, size_y)
    for budget in (1, 4000, 1 << 22):  # from one lattice row per band to all at once
        monkeypatch.setattr(tiling, "_FRACTION_BYTES", budget)
        got = mask_fractions(mask, x0, y0, size_x, size_y)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert np.array_equal(got > 0.05, expected > 0.05) and np.array_equal(got == 0, expected == 0)


def test_tissue_mask_packs_and_unpacks():
    rng = np.random.default_rng(3)
    flags = rng.random((13, 21)) > 0.5
    mask = TissueMask.from_bool(flags, downsample=4.0, threshold=9.0, tissue_fraction=float(flags.mean()))
    assert mask.shape == (13, 21) and mask.packed.shape == (13, 3) and mask.packed.dtype == np.uint8
    assert mask.mask.dtype == bool and np.array_equal(mask.mask, flags)
    assert np.array_equal(mask.rows(4, 9), flags[4:9]) and np.array_equal(mask.rows(11, 40), flags[11:])
    again = TissueMask(mask.packed, mask.shape, 4.0, 9.0, mask.tissue_fraction, level=2, mpp=8.0)
    assert np.array_equal(again.mask, flags) and again.level == 2 and again.mpp == 8.0
    with pytest.raises(ValueError):
        TissueMask(mask.packed, (13, 30), 4.0, 9.0, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mask.threshold = 3.0  # type: ignore[misc]


# -- memory --------------------------------------------------------------------------------------------------
def _rows_of(width: int):
    """read_rows for an endless synthetic picture: row r is the same whatever range it is read in."""
    cols = np.arange(width)

    def read_rows(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, width, 3), dtype=np.uint8)
        for index, row in enumerate(range(start, stop)):
            noise = np.random.default_rng([11, row]).integers(-30, 31, size=(width, 3))
            tissue = np.sin(row / 41.0) * np.sin(cols / 29.0) > 0.2
            base = np.where(tissue[:, None], [175, 85, 150], [236, 236, 236])
            out[index] = np.clip(base + np.where(tissue[:, None], noise, noise // 6), 0, 255)
        return out

    return read_rows


def _traced_peak(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_strip_memory_does_not_grow_with_the_picture_height():
    width, budget = 600, 2 << 20  # strips of 134 rows
    read_rows = _rows_of(width)
    tissue_from_rows(read_rows, 50, width, TISSUE, budget)  # lazy imports and caches, before measuring
    peaks = {}
    for height in (2000, 8000):
        peaks[height] = _traced_peak(lambda h=height: tissue_from_rows(read_rows, h, width, TISSUE, budget))
    # Working memory: the peak less the result, the packed mask (75 bytes a row), which grows with the height.
    working = {height: peak - height * (-(-width // 8)) for height, peak in peaks.items()}
    assert working[8000] < 1.2 * working[2000], peaks
    assert peaks[8000] < 1.3 * peaks[2000], peaks
    assert peaks[8000] < 2 * budget, peaks

    picture = read_rows(0, 2000)
    whole = _traced_peak(lambda: oracle_tissue_from_rgb(picture, TISSUE))
    assert whole > 2 * peaks[2000], (whole, peaks)  # what the strips save, already at 2000 rows
