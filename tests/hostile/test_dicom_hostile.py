"""Hostile DICOM WSI series (written by code, see ``dicom_wsi.py``): damaged frames and decompression bombs.

The promise is the TIFF backend's: a few frames that cannot be decoded are read as white, counted, and the
tiles over them left out of the prediction with a QC note; past the allowance of ``slides/base.py`` the slide
is refused in one line; a series whose frame byte counts imply a compression ratio above the budget is
refused when it is opened, before any frame is decoded, with bounded memory; nothing a library logs or
warns reaches stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from dicom_wsi import damage_frames, fragment_spans, j2k_bomb, jpeg_frames, write_series
from hostile_corpus import tissue_pixels
from test_hostile_cli import _CHILD

from sequoia_clinic.errors import CorruptTileError, SlideFormatError
from sequoia_clinic.slides.base import CORRUPT_TILE_ALLOWANCE, MAX_COMPRESSION_RATIO
from sequoia_clinic.slides.dicom_backend import declared_frame_size
from sequoia_clinic.slides.opening import open_slide

RSS_LIMIT_KB = 1_500_000  # 1.5 GB, as for the TIFF bombs
TIME_LIMIT_S = 120


def _one_error_line(result) -> str:
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr[:2000])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[:2000]
    assert "Traceback" not in result.stderr and result.stdout == "", result.stdout[:2000]
    return lines[0]


def _series(folder: Path, pixels: np.ndarray, tile: int = 256) -> Path:
    return write_series(folder, [pixels], tile=tile)


# ---- the test builder itself -------------------------------------------------------------------------------
def test_the_written_fragments_are_the_encoded_frames(tmp_path):
    pixels = tissue_pixels(512)
    level = _series(tmp_path / "s", pixels) / "level0.dcm"
    data = level.read_bytes()
    stored = [data[start : start + length] for start, length in fragment_spans(level)]
    written = [frame + b"\0" * (len(frame) % 2) for frame in jpeg_frames(pixels, 256)]  # padded to even
    assert stored == written  # the walk finds exactly the frames written, in order


# ---- damaged frames ------------------------------------------------------------------------------------------
def test_a_damaged_frame_reads_white_and_is_recorded(tmp_path):
    pixels = tissue_pixels(1024)
    level = _series(tmp_path / "one", pixels) / "level0.dcm"
    spans = fragment_spans(level)
    intact_frame = level.read_bytes()[spans[0][0] : spans[0][0] + spans[0][1]]
    damage_frames(level, (5,))  # column 1, row 1 of a 4 x 4 grid
    with open_slide(level.parent) as slide:
        tile = slide.read_native_tile(0, 1, 1)
        assert tile.shape == (256, 256, 3) and (tile == 255).all()
        assert slide.corrupt_tiles(0) == {(1, 1)} and slide.corrupt_tile_count == 1
        intact = slide.read_native_tile(0, 0, 0)
        np.testing.assert_array_equal(intact, imagecodecs.jpeg8_decode(intact_frame))  # the stored frame
        assert np.abs(intact.astype(int) - pixels[:256, :256]).mean() < 20  # and the pixels written
        region = slide.read_level_region(0, (200, 200), (120, 120))  # a region over the damaged frame
        assert (region[56:, 56:] == 255).all() and slide.corrupt_tile_count == 1


def test_a_frame_declaring_more_pixels_than_the_series_is_not_decoded(tmp_path, monkeypatch):
    """A frame whose JPEG header claims 60,000 x 60,000 px would make the decoder allocate ~10 GB."""
    level = _series(tmp_path / "big", tissue_pixels(512)) / "level0.dcm"
    start, length = fragment_spans(level)[3]
    data = bytearray(level.read_bytes())
    frame = data[start : start + length]
    sof = frame.find(b"\xff\xc0")
    frame[sof + 5 : sof + 9] = (60_000).to_bytes(2, "big") * 2  # height, width of the start-of-frame
    data[start : start + length] = frame
    level.write_bytes(bytes(data))
    assert declared_frame_size(bytes(frame), "1.2.840.10008.1.2.4.50") == (60_000, 60_000)
    import sequoia_clinic.slides.dicom_backend as backend

    def no_decode(*args, **kwargs):
        raise AssertionError("the oversized frame reached the decoder")

    with open_slide(level.parent) as slide:
        slide.read_native_tile(0, 0, 0)  # an intact frame is decoded as before
        monkeypatch.setattr(backend, "decode_frame", no_decode)
        assert (slide.read_native_tile(0, 1, 1) == 255).all() and slide.corrupt_tiles(0) == {(1, 1)}


def test_the_declared_size_of_frames_is_read_from_their_headers():
    pixels = np.zeros((200, 176, 3), np.uint8)
    jpeg = imagecodecs.jpeg8_encode(pixels)
    assert declared_frame_size(jpeg, "1.2.840.10008.1.2.4.50") == (176, 200)
    with_fill = jpeg[:2] + b"\xff\xff" + jpeg[2:]  # fill bytes before a marker are allowed
    assert declared_frame_size(with_fill, "1.2.840.10008.1.2.4.50") == (176, 200)
    for codecformat in ("j2k", "jp2"):
        encoded = imagecodecs.jpeg2k_encode(pixels, level=0, codecformat=codecformat)
        assert declared_frame_size(encoded, "1.2.840.10008.1.2.4.90") == (176, 200)
    assert declared_frame_size(b"\xff\xd8\xff\xd9", "1.2.840.10008.1.2.4.50") is None
    assert declared_frame_size(bytes(64), "1.2.840.10008.1.2.4.90") is None


def _overlaps(corner: np.ndarray, native: tuple[int, int], size: int = 240) -> bool:
    x, y = int(corner[0]), int(corner[1])
    left, top = native[0] * size, native[1] * size
    return x < left + size and left < x + 256 and y < top + size and top < y + 256


def test_a_few_damaged_frames_are_left_out_with_a_count(tmp_path, cmu_pixels, demo_bundle):
    from sequoia_clinic.pipeline.predict import PredictRequest, load_folds, run_prediction
    from sequoia_clinic.settings import Settings

    # 240 px frames under 256 px output tiles (as the CMU DICOM): several output tiles overlap each frame
    pixels = np.ascontiguousarray(cmu_pixels[:1920, :1920, :3])
    settings = Settings(cache_dir=None)
    folds = load_folds(demo_bundle, settings)
    clean = _series(tmp_path / "clean", pixels, tile=240)
    intact = run_prediction(PredictRequest(clean), demo_bundle, folds, settings)
    corners = intact.grid.level_coords()
    damaged_frames = []
    for used in (len(intact.used_indices) // 3, 2 * len(intact.used_indices) // 3):
        centre = corners[intact.used_indices[used]] + 128
        damaged_frames.append((int(centre[0]) // 240, int(centre[1]) // 240))  # frames under used tiles
    assert len(set(damaged_frames)) == 2 <= CORRUPT_TILE_ALLOWANCE
    path = _series(tmp_path / "few", pixels, tile=240)
    damage_frames(path / "level0.dcm", [row * 8 + col for col, row in damaged_frames])
    damaged = run_prediction(PredictRequest(path), demo_bundle, folds, settings)
    notes = [w.message for w in damaged.qc_warnings if w.code == "corrupt-tiles"]
    assert len(notes) == 1 and notes[0].startswith("2 stored tile(s) of the slide could not be decoded")
    over_damage = {
        int(i) for i in intact.used_indices if any(_overlaps(corners[i], frame) for frame in damaged_frames)
    }
    assert over_damage and not over_damage & set(damaged.used_indices.tolist())  # none over the damage
    kept = {int(i) for i in intact.used_indices} - over_damage
    assert kept <= set(damaged.used_indices.tolist())  # every other tile is still used
    assert len(damaged.used_indices) == len(intact.used_indices) - len(over_damage)
    assert np.isfinite(damaged.expression).all()


def _many_damaged(folder: Path) -> Path:
    series = _series(folder / "many", tissue_pixels(1024))
    damage_frames(series / "level0.dcm", tuple(range(8)))  # half of the 16 frames
    return series


def test_many_damaged_frames_refuse_the_slide(tmp_path):
    with (
        open_slide(_many_damaged(tmp_path)) as slide,
        pytest.raises(CorruptTileError, match="cannot be decoded, above the limit"),
    ):
        slide.thumbnail(256)


def test_many_damaged_frames_are_one_error_line(cli, tmp_path):
    series = _many_damaged(tmp_path)
    line = _one_error_line(cli(["inspect", str(series)]))
    assert str(series) in line and "cannot be decoded, above the limit" in line and "export" in line


# ---- decompression bombs and truncation ----------------------------------------------------------------------
def test_a_dicom_bomb_is_refused_before_any_frame_is_decoded(tmp_path, monkeypatch):
    import sequoia_clinic.slides.dicom_backend as backend

    series = j2k_bomb(tmp_path / "bomb")
    decoded = sum(
        len(fragment_spans(f)) * 512 * 512 * 3 for f in series.iterdir()
    )  # the declared pixels, from the files' own structure
    stored = sum(length for f in series.iterdir() for _, length in fragment_spans(f))
    assert decoded > MAX_COMPRESSION_RATIO * stored  # the case is a bomb by the budget's own measure

    def no_decode(*args, **kwargs):
        raise AssertionError("a frame of the bomb was decoded")

    monkeypatch.setattr(backend, "decode_frame", no_decode)
    monkeypatch.setattr(backend.DicomSlide, "_decode_tile", no_decode)
    with pytest.raises(SlideFormatError, match="compression ratio above 1000:1") as raised:
        open_slide(series)
    assert f"{decoded / 2**30:,.1f} GiB of pixels in {stored / 2**20:,.1f} MiB" in str(raised.value)


def test_a_dicom_bomb_is_one_error_line(cli, tmp_path):
    series = j2k_bomb(tmp_path / "bomb")
    line = _one_error_line(cli(["inspect", str(series)]))
    assert str(series) in line and "decompression bomb" in line and "export it again" in line


@pytest.mark.parametrize("frame", [10, 15])
def test_a_truncated_dicom_series_is_refused_when_opened(cli, tmp_path, frame):
    series = _series(tmp_path / "cut", tissue_pixels(1024))
    level = series / "level0.dcm"
    start, length = fragment_spans(level)[frame]
    level.write_bytes(level.read_bytes()[: start + length // 2])  # inside one frame
    line = _one_error_line(cli(["inspect", str(series)]))
    assert line.startswith(f"error: {series}: ") and "truncated" in line


def test_the_clean_series_passes_the_checks(tmp_path):
    pixels = tissue_pixels(1024)
    with open_slide(_series(tmp_path / "ok", pixels)) as slide:
        thumbnail = slide.thumbnail(256)
        assert slide.corrupt_tile_count == 0 and thumbnail.shape == (256, 256, 3)


# ---- as real processes: whole stderr, peak memory (the child runner of test_hostile_cli) --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case", ["bomb", "many-damaged"])
def test_as_a_real_process_stays_quiet_and_bounded(case: str, tmp_path: Path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    series = j2k_bomb(inputs / "bomb") if case == "bomb" else _many_damaged(inputs)
    before = {str(p) for p in tmp_path.rglob("*")}
    peak = tmp_path / "peak"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(peak), "inspect", str(series)],
        cwd=inputs,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        check=False,
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[:2000]
    assert len(lines) == 1 and lines[0].startswith("error: ") and proc.stdout == "", proc.stderr[:2000]
    assert {str(p) for p in tmp_path.rglob("*")} - before == {str(peak)}  # nothing else written
    peak_kb = int(peak.read_text())
    assert 10_000 < peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb / 1e6:.2f} GB"
