"""Damaged stored tiles: a few are left out (with a QC note giving the count), many refuse the slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from hostile_corpus import RESOLUTION, corrupt_tiles

from sequoia_clinic.errors import CorruptTileError
from sequoia_clinic.pipeline.predict import PredictRequest, load_folds, run_prediction
from sequoia_clinic.settings import Settings
from sequoia_clinic.slides.opening import open_slide


def _cmu_tiff(path: Path, pixels: np.ndarray, tile: int = 256) -> Path:
    tifffile.imwrite(path, pixels, tile=(tile, tile), compression="jpeg", photometric="rgb", **RESOLUTION)
    return path


def _damage(path: Path, tiles: tuple[int, ...]) -> None:
    with tifffile.TiffFile(path) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(3)
    for index in tiles:
        data[offsets[index] : offsets[index] + counts[index]] = rng.integers(
            0, 256, counts[index], dtype=np.uint8
        ).tobytes()
    path.write_bytes(bytes(data))


def _overlaps(corner: np.ndarray, native: tuple[int, int], size: int = 240) -> bool:
    x, y = int(corner[0]), int(corner[1])
    left, top = native[0] * size, native[1] * size
    return x < left + size and left < x + 256 and y < top + size and top < y + 256


def test_a_damaged_tile_reads_white_and_is_recorded(tmp_path, cmu_pixels):
    path = _cmu_tiff(tmp_path / "one.tif", np.ascontiguousarray(cmu_pixels[:1024, :1024]))
    _damage(path, (5,))  # column 1, row 1 of a 4 x 4 grid
    with open_slide(path) as slide:
        tile = slide.read_native_tile(0, 1, 1)
        assert (tile == 255).all() and slide.corrupt_tiles(0) == {(1, 1)}
        intact = slide.read_native_tile(0, 0, 0).astype(int) - cmu_pixels[:256, :256, :3]
        assert np.abs(intact).mean() < 5  # an intact tile: the pixels written (JPEG error only)


def test_a_few_damaged_tiles_are_left_out_with_a_count(tmp_path, cmu_pixels, demo_bundle):
    # 240 px stored tiles under 256 px output tiles: several output tiles overlap each stored one
    pixels = np.ascontiguousarray(cmu_pixels[:1920, :1920, :3])
    settings = Settings(cache_dir=None)
    folds = load_folds(demo_bundle, settings)
    clean = _cmu_tiff(tmp_path / "clean.tif", pixels, tile=240)
    intact = run_prediction(PredictRequest(clean), demo_bundle, folds, settings)
    corners = intact.grid.level_coords()
    centre = corners[intact.used_indices[len(intact.used_indices) // 2]] + 128
    native = (int(centre[0]) // 240, int(centre[1]) // 240)  # a stored tile under used tissue tiles
    path = _cmu_tiff(tmp_path / "few.tif", pixels, tile=240)
    _damage(path, (native[1] * 8 + native[0],))
    damaged = run_prediction(PredictRequest(path), demo_bundle, folds, settings)
    notes = [w.message for w in damaged.qc_warnings if w.code == "corrupt-tiles"]
    assert len(notes) == 1 and notes[0].startswith("1 stored tile(s) of the slide could not be decoded")
    assert not any(_overlaps(corners[i], native) for i in damaged.used_indices)  # none over the damage
    kept = {int(i) for i in intact.used_indices if not _overlaps(corners[i], native)}
    assert kept <= set(damaged.used_indices.tolist())  # every other tile is still used
    assert np.isfinite(damaged.expression).all()


def test_many_damaged_tiles_refuse_the_slide(tmp_path):
    path = corrupt_tiles(tmp_path / "many.tif", tuple(range(8)))
    with (
        open_slide(path) as slide,
        pytest.raises(CorruptTileError, match="cannot be decoded, above the limit"),
    ):
        slide.thumbnail(256)
