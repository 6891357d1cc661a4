"""Tissue mask, tile grid, tile selection, the tile reader and the overlay.

Tile pixels are compared with an independent reader (tiffslide ``read_region`` per tile, Pillow for the
area resize); grid geometry with plain arithmetic; mask fractions with a brute-force average; tissue
fractions with the figures in ../shared/reference/slides.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tiffslide
from PIL import Image

from sequoia_clinic.errors import NoTissueError
from sequoia_clinic.settings import Settings, TileSettings
from sequoia_clinic.slides.opening import open_slide
from sequoia_clinic.slides.overlay import render_overlay
from sequoia_clinic.slides.tile_reader import NativeTileCache, iter_tile_batches
from sequoia_clinic.slides.tiling import (
    build_tile_grid,
    mask_fractions,
    select_tiles,
    tile_passes_pixel_check,
)
from sequoia_clinic.slides.tissue import TissueMask, compute_tissue_mask

SETTINGS = Settings()


def write_tiff(path: Path, image: np.ndarray, mpp: float = 0.5) -> Path:
    tifffile.imwrite(
        path,
        image,
        tile=(128, 128),
        photometric="rgb",
        compression="zlib",
        resolution=(1e4 / mpp, 1e4 / mpp),
        resolutionunit="CENTIMETER",
        metadata=None,
    )
    return path


def pipeline(path: Path, mpp: float | None = None, tiles: TileSettings = SETTINGS.tiles):
    slide = open_slide(path, mpp=mpp)
    mask = compute_tissue_mask(slide, SETTINGS.tissue)
    candidates = build_tile_grid(slide, mask, tiles)
    return slide, mask, candidates, select_tiles(slide, candidates, tiles)


@pytest.fixture(scope="module")
def cmu(cmu_svs):
    slide, mask, candidates, grid = pipeline(cmu_svs)
    yield slide, mask, candidates, grid
    slide.close()


# -- tissue ----------------------------------------------------------------------------------------------


def test_tissue_fraction_matches_reference_figures(cmu):
    _, mask, _, _ = cmu
    assert mask.mask.shape == (186, 139) and mask.downsample == 16.0  # 7.984 um/px from level 0
    assert mask.tissue_fraction == pytest.approx(0.333, abs=0.03)  # slides.md: 0.333 with Otsu


def test_tcga_tissue_fraction_matches_reference_figures(tcga_svs):
    with open_slide(tcga_svs, mpp=0.25) as slide:
        tcga = compute_tissue_mask(slide, SETTINGS.tissue)
        assert tcga.level == 1 and tcga.downsample == pytest.approx(2.0005 * 16, rel=1e-4)
        assert tcga.tissue_fraction == pytest.approx(0.620, abs=0.03)  # slides.md: 0.620 with Otsu


def test_mask_finds_a_stained_rectangle_where_it_is(tmp_path):
    image = np.full((2048, 3072, 3), 242, np.uint8)
    texture = np.random.default_rng(2).integers(-40, 41, size=(1024, 1536, 1))
    image[512:1536, 1024:2560] = np.array([170, 80, 150]) + texture  # textured pink, 1024 x 1536 px
    with open_slide(write_tiff(tmp_path / "rect.tif", image)) as slide:
        mask = compute_tissue_mask(slide, SETTINGS.tissue)
        assert mask.downsample == 16.0  # 8 um/px from 0.5 um/px
        expected = np.zeros((128, 192), bool)
        expected[32:96, 64:160] = True
        corners = np.array([(32, 64), (32, 159), (95, 64), (95, 159)])
        wrong = np.argwhere(mask.mask != expected)  # only the median filter's rounded corners may differ
        assert len(wrong) < 30 and all(np.abs(corners - w).max(axis=1).min() <= 3 for w in wrong)
        grid = select_tiles(slide, build_tile_grid(slide, mask, SETTINGS.tiles), SETTINGS.tiles)
        assert grid.keep.sum() == 4 * 6
        assert {tuple(c) for c in grid.coords[grid.keep]} == {
            (x, y) for x in range(1024, 2560, 256) for y in range(512, 1536, 256)
        }


def test_blank_slide_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    image = (240 + rng.integers(-3, 4, size=(1024, 1024, 3))).astype(np.uint8)  # glass with sensor noise
    path = write_tiff(tmp_path / "blank.tif", image)
    with open_slide(path) as slide, pytest.raises(NoTissueError, match="no tissue") as caught:
        compute_tissue_mask(slide, SETTINGS.tissue)
    assert "blank.tif" in str(caught.value) and "\n" not in str(caught.value)


# -- grid ------------------------------------------------------------------------------------------------


def test_cmu_grid_geometry(cmu):
    _, _, candidates, grid = cmu
    assert (grid.level, grid.read_px, grid.tile_px) == (0, 256, 256)  # 0.499 um/px: no resampling
    assert grid.grid_shape == (2967 // 256, 2220 // 256) and grid.n_tiles == 88
    rows, cols = np.divmod(np.arange(88), 8)
    assert np.array_equal(grid.coords, np.stack([cols * 256, rows * 256], axis=1))
    assert grid.coords.dtype == np.int64 and grid.tile_size_level0 == 256
    assert grid.pixel_checked and not candidates.pixel_checked
    assert not np.any(grid.keep & ~candidates.keep)  # the pixel check only removes tiles
    assert candidates.keep.sum() == 49 and grid.keep.sum() == 42  # recorded figures; see README


def test_tcga_grid_at_0_25_reads_level_1_on_exact_lattice(tcga_svs):
    slide, _, _, grid = pipeline(tcga_svs, mpp=0.25)
    with slide:
        assert (grid.level, grid.read_px) == (1, 256)
        assert grid.tile_size_level0 == pytest.approx(256 * 2.0005, rel=1e-4)
        assert grid.grid_shape == (1783 // 256, 2221 // 256)
        level_xy = np.floor(grid.coords / slide.info.level_downsamples[1]).astype(int)
        rows, cols = np.divmod(np.arange(grid.n_tiles), grid.grid_shape[1])
        assert np.array_equal(level_xy, np.stack([cols * 256, rows * 256], axis=1))


def test_synthetic_pyramid_reads_level_1_on_exact_lattice(mosaic_pyramid):
    """The TCGA checks on a JPEG pyramid of exact downsample 2: declared 0.25 um/px reads level 1 as is."""
    slide, _, _, grid = pipeline(mosaic_pyramid, mpp=0.25)
    with slide, tiffslide.TiffSlide(mosaic_pyramid) as reference:
        assert (grid.level, grid.read_px, grid.tile_px, grid.tile_size_level0) == (1, 256, 256, 512)
        assert grid.grid_shape == (2967 // 256, 2220 // 256)
        rows, cols = np.divmod(np.arange(grid.n_tiles), grid.grid_shape[1])
        assert np.array_equal(grid.coords, np.stack([cols * 512, rows * 512], axis=1))
        kept = grid.kept_indices
        pixels = np.concatenate([b.pixels for b in iter_tile_batches(slide, grid, kept, SETTINGS.tiles)])
        for index, tile in zip(kept, pixels, strict=True):
            x, y = grid.coords[index]
            assert np.array_equal(tile, reference.read_region((int(x), int(y)), 1, (256, 256), as_array=True))


def test_mask_fractions_against_brute_force():
    rng = np.random.default_rng(1)
    mask = TissueMask.from_bool(rng.random((40, 50)) > 0.6, downsample=7.3, threshold=0, tissue_fraction=0.4)
    x0 = np.array([0.0, 37.0, 120.5, 300.0])
    y0 = np.array([5.0, 99.0, 200.0])
    size = 61.7
    got = mask_fractions(mask, x0, y0, np.full(4, size), np.full(3, size))
    fine = np.repeat(np.repeat(mask.mask, 73, axis=0), 73, axis=1)  # 10 sub-pixels per level-0 pixel
    for r, y in enumerate(y0):
        for c, x in enumerate(x0):
            block = fine[
                int(round(y * 10)) : int(round((y + size) * 10)),
                int(round(x * 10)) : int(round((x + size) * 10)),
            ]
            assert got[r, c] == pytest.approx(block.mean(), abs=0.01)


def test_svs_and_dicom_give_the_same_kept_tiles_and_pixels(cmu, cmu_dicom):
    svs, _, _, svs_grid = cmu
    dicom, _, _, dicom_grid = pipeline(cmu_dicom)
    with dicom:
        assert np.array_equal(svs_grid.coords, dicom_grid.coords)
        assert np.array_equal(svs_grid.keep, dicom_grid.keep)
        kept = svs_grid.kept_indices
        a = np.concatenate([b.pixels for b in iter_tile_batches(svs, svs_grid, kept, SETTINGS.tiles)])
        b = np.concatenate([b.pixels for b in iter_tile_batches(dicom, dicom_grid, kept, SETTINGS.tiles)])
        assert np.array_equal(a, b)


# -- pixel check -----------------------------------------------------------------------------------------


def test_pixel_check_drops_blank_and_flat_tiles(cmu):
    slide, _, _, grid = cmu
    tissue = slide.read_region(tuple(grid.coords[grid.kept_indices[0]]), 0, (256, 256))
    assert tile_passes_pixel_check(tissue, grid.mask_threshold, SETTINGS.tiles)
    glass = np.full((256, 256, 3), 243, np.uint8)
    assert not tile_passes_pixel_check(glass, grid.mask_threshold, SETTINGS.tiles)
    flat_pink = np.full((256, 256, 3), (170, 80, 150), np.uint8)  # saturated but without contrast
    assert not tile_passes_pixel_check(flat_pink, grid.mask_threshold, SETTINGS.tiles)


def test_select_tiles_with_only_background_candidates_is_an_error(cmu):
    slide, _, candidates, _ = cmu
    only_corner = np.zeros(candidates.n_tiles, bool)
    only_corner[0] = True  # the top-left tile of CMU is empty glass
    with pytest.raises(NoTissueError, match="CMU-1-Small-Region.svs"):
        select_tiles(slide, dataclasses.replace(candidates, keep=only_corner), SETTINGS.tiles)


# -- tile reader -----------------------------------------------------------------------------------------


def test_tile_reader_matches_read_region_in_requested_order(cmu, cmu_svs):
    slide, _, _, grid = cmu
    order = np.random.default_rng(5).permutation(grid.n_tiles)
    settings = dataclasses.replace(SETTINGS.tiles, batch_size=7)
    batches = list(iter_tile_batches(slide, grid, order, settings))
    assert [len(b.indices) for b in batches] == [7] * 12 + [4]
    indices = np.concatenate([b.indices for b in batches])
    pixels = np.concatenate([b.pixels for b in batches])
    assert np.array_equal(indices, order) and pixels.shape == (88, 256, 256, 3) and pixels.dtype == np.uint8
    with tiffslide.TiffSlide(cmu_svs) as reference:
        for index, tile in zip(indices, pixels, strict=True):
            x, y = grid.coords[index]
            assert np.array_equal(tile, reference.read_region((int(x), int(y)), 0, (256, 256), as_array=True))


def test_tile_reader_jpeg2000_level1(tcga_svs):
    slide, _, _, grid = pipeline(tcga_svs, mpp=0.25)
    with slide, tiffslide.TiffSlide(tcga_svs) as reference:
        kept = grid.kept_indices
        pixels = np.concatenate([b.pixels for b in iter_tile_batches(slide, grid, kept, SETTINGS.tiles)])
        for index, tile in zip(kept, pixels, strict=True):
            x, y = grid.coords[index]
            assert np.array_equal(tile, reference.read_region((int(x), int(y)), 1, (256, 256), as_array=True))


def test_tile_reader_resamples_with_area_interpolation(tcga_svs):
    """At a declared 0.125 um/px, level 1 is 0.25 um/px: 512 px are read and box-reduced to 256."""
    tiles = SETTINGS.tiles
    slide, _, _, grid = pipeline(tcga_svs, mpp=0.125, tiles=tiles)
    with slide, tiffslide.TiffSlide(tcga_svs) as reference:
        assert (grid.level, grid.read_px, grid.tile_px) == (1, 512, 256)
        some = grid.kept_indices[:12]
        pixels = np.concatenate([b.pixels for b in iter_tile_batches(slide, grid, some, tiles)])
        for index, tile in zip(some, pixels, strict=True):
            x, y = grid.coords[index]
            square = reference.read_region((int(x), int(y)), 1, (512, 512), as_array=True)
            expected = np.asarray(Image.fromarray(square).resize((256, 256), Image.Resampling.BOX))
            assert np.abs(tile.astype(int) - expected).max() <= 1


def test_synthetic_pyramid_resamples_with_area_interpolation(mosaic_pyramid):
    """At a declared 0.125 um/px, level 1 is 0.25 um/px: 512 px are read and box-reduced to 256."""
    slide, _, _, grid = pipeline(mosaic_pyramid, mpp=0.125)
    with slide, tiffslide.TiffSlide(mosaic_pyramid) as reference:
        assert (grid.level, grid.read_px, grid.tile_px) == (1, 512, 256)
        some = grid.kept_indices[:12]
        assert len(some) > 0
        pixels = np.concatenate([b.pixels for b in iter_tile_batches(slide, grid, some, SETTINGS.tiles)])
        for index, tile in zip(some, pixels, strict=True):
            x, y = grid.coords[index]
            square = reference.read_region((int(x), int(y)), 1, (512, 512), as_array=True)
            expected = np.asarray(Image.fromarray(square).resize((256, 256), Image.Resampling.BOX))
            assert np.abs(tile.astype(int) - expected).max() <= 1


def test_planned_reads_drop_spent_tiles_and_still_decode_each_tile_once(cmu, cmu_svs):
    """A grid-order pass that announces its reads keeps ~the spent budget, not the whole budget."""
    slide, _, _, _ = cmu
    tile_bytes = int(np.prod(slide.native_tile_size(0))) * 3
    cache = NativeTileCache(slide, 0, max_bytes=1 << 30, executor=None, spent_bytes=12 * tile_bytes)
    # output "tiles" that straddle two stored rows, read row by row: every stored tile is used twice
    reads = [[(col, row), (col, row + 1)] for row in range(12) for col in range(10)]
    cache.plan(key for keys in reads for key in keys)
    peak = 0
    for keys in reads:
        cache.fetch(keys)
        peak = max(peak, cache.cached_bytes)
    assert cache.decoded == 130  # each of the 13 x 10 stored tiles once
    assert peak <= 13 * tile_bytes  # the spent budget plus the tile just stored, not 130 tiles
    unplanned = NativeTileCache(slide, 0, max_bytes=1 << 30, executor=None, spent_bytes=12 * tile_bytes)
    for keys in reads:
        unplanned.fetch(keys)
    assert unplanned.decoded == 130 and unplanned.cached_bytes > 100 * tile_bytes  # no plan: all kept (LRU)


def test_tile_cache_respects_its_budget(cmu, cmu_svs):
    slide, _, _, grid = cmu
    cache = NativeTileCache(slide, 0, max_bytes=1 << 20, executor=None)
    for row in range(13):
        cache.fetch([(col, row) for col in range(10)])
    assert cache.cached_bytes <= 1 << 20 and cache.decoded == 130
    small = dataclasses.replace(SETTINGS.tiles, tile_cache_mb=1, read_threads=1, batch_size=5)
    a = np.concatenate([b.pixels for b in iter_tile_batches(slide, grid, np.arange(88), small)])
    b = np.concatenate([b.pixels for b in iter_tile_batches(slide, grid, np.arange(88), SETTINGS.tiles)])
    assert np.array_equal(a, b)
    in_turn = iter_tile_batches(slide, grid, np.arange(88), small, prefetch=False)  # no read-ahead
    assert np.array_equal(np.concatenate([b.pixels for b in in_turn]), b)


# -- overlay ---------------------------------------------------------------------------------------------


def test_overlay_tints_tissue_and_outlines_tiles(cmu):
    slide, mask, _, grid = cmu
    picture = render_overlay(slide, mask, grid, max_size=500)
    thumb = slide.thumbnail(500)
    assert picture.shape == thumb.shape and picture.dtype == np.uint8
    scale = picture.shape[1] / 2220
    x, y = grid.coords[grid.kept_indices[0]]
    left, top = int(x * scale), int(y * scale)
    assert tuple(picture[top + 5, left]) == (20, 60, 220)  # outline colour on the tile's left edge
    covered = np.zeros(mask.mask.shape, bool)  # mask pixels under (or touching) a kept tile
    for x, y in grid.coords[grid.kept_indices]:
        covered[max(0, y // 16 - 1) : (y + 256) // 16 + 1, max(0, x // 16 - 1) : (x + 256) // 16 + 1] = True
    rows, cols = np.nonzero(~mask.mask & ~covered)
    for r, c in list(zip(rows, cols, strict=True))[:50]:  # background: exactly the thumbnail
        ty, tx = int((r + 0.5) * 16 * scale), int((c + 0.5) * 16 * scale)
        assert np.array_equal(picture[ty, tx], thumb[ty, tx])
    rows, cols = np.nonzero(mask.mask & ~covered)
    r, c = rows[0], cols[0]  # tissue outside kept tiles: tinted towards green
    ty, tx = int((r + 0.5) * 16 * scale), int((c + 0.5) * 16 * scale)
    assert int(picture[ty, tx, 1]) - int(picture[ty, tx, 0]) > int(thumb[ty, tx, 1]) - int(thumb[ty, tx, 0])
