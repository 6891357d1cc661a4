"""Pixel formats of TIFF slides: 16-bit, grayscale, palette and alpha become the right 8-bit RGB.

Each synthetic slide is written with tifffile; the expected RGB is computed here with numpy from the
array that was written (an independent conversion), and compared with what the slide reader returns for
the whole level and for single stored tiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from sequoia_clinic.errors import SlideFormatError
from sequoia_clinic.slides.opening import open_slide

RES = {"resolution": (2e4, 2e4), "resolutionunit": "CENTIMETER"}  # 0.5 um/px
RNG = np.random.default_rng(7)


def _write(path: Path, data: np.ndarray, **kwargs) -> Path:
    tifffile.imwrite(path, data, tile=(256, 256), **{**RES, **kwargs})
    return path


def _read_all(path: Path) -> tuple[np.ndarray, str | None, np.ndarray]:
    with open_slide(path) as slide:
        width, height = slide.info.dimensions
        region = slide.read_level_region(0, (0, 0), (width, height))
        tile = slide.read_native_tile(0, 1, 0)
        return region, slide.info.pixel_note, tile


def _check(path: Path, expected: np.ndarray, note: str | None) -> None:
    region, got_note, tile = _read_all(path)
    np.testing.assert_array_equal(region, expected)
    np.testing.assert_array_equal(tile, expected[:256, 256:512])
    assert got_note == note


def test_16_bit_rgb_is_scaled_by_the_stored_bit_depth(tmp_path):
    data = RNG.integers(0, 65536, (300, 520, 3), dtype=np.uint16)
    expected = np.rint(data.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    _check(
        _write(tmp_path / "rgb16.tif", data, photometric="rgb"), expected, "16-bit samples scaled to 8 bit"
    )


def test_12_bit_samples_in_16_bit_words_use_the_stored_depth(tmp_path):
    data = RNG.integers(0, 4096, (300, 520, 3), dtype=np.uint16)
    expected = np.rint(data.astype(np.float64) * 255.0 / 4095.0).astype(np.uint8)
    path = _write(tmp_path / "rgb12.tif", data, photometric="rgb", bitspersample=12)
    _check(path, expected, "12-bit samples scaled to 8 bit")


def test_grayscale_becomes_three_equal_channels(tmp_path):
    data = RNG.integers(0, 256, (300, 520), dtype=np.uint8)
    expected = np.repeat(data[:, :, None], 3, axis=2)
    _check(_write(tmp_path / "gray.tif", data, photometric="minisblack"), expected, "gray converted to RGB")


def test_min_is_white_grayscale_is_inverted(tmp_path):
    data = RNG.integers(0, 256, (300, 520), dtype=np.uint8)
    expected = np.repeat((255 - data)[:, :, None], 3, axis=2)
    path = _write(tmp_path / "white.tif", data, photometric="miniswhite")
    _check(path, expected, "gray-inverted converted to RGB")


def test_palette_is_looked_up_in_the_colour_map(tmp_path):
    data = RNG.integers(0, 256, (300, 520), dtype=np.uint8)
    colormap = RNG.integers(0, 65536, (3, 256), dtype=np.uint16)
    expected = np.rint(colormap.T[data].astype(np.float64) / 257.0).astype(np.uint8)
    path = _write(tmp_path / "palette.tif", data, photometric="palette", colormap=colormap)
    _check(path, expected, "palette converted to RGB")


def test_unassociated_alpha_is_composited_on_white(tmp_path):
    data = RNG.integers(0, 256, (300, 520, 4), dtype=np.uint8)
    rgb, alpha = data[:, :, :3].astype(np.float64), data[:, :, 3:].astype(np.float64) / 255.0
    expected = np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    path = _write(tmp_path / "rgba.tif", data, photometric="rgb", extrasamples=["unassalpha"])
    _check(path, expected, "alpha composited on white")


def test_premultiplied_alpha_is_composited_on_white(tmp_path):
    alpha = RNG.integers(0, 256, (300, 520, 1), dtype=np.uint8)
    rgb = (RNG.random((300, 520, 3)) * alpha).astype(np.uint8)  # premultiplied: colour <= alpha
    data = np.concatenate([rgb, alpha], axis=2)
    a = alpha.astype(np.float64) / 255.0
    expected = np.clip(np.rint(rgb.astype(np.float64) + 255.0 * (1.0 - a)), 0, 255).astype(np.uint8)
    path = _write(tmp_path / "rgba-pre.tif", data, photometric="rgb", extrasamples=["assocalpha"])
    _check(path, expected, "alpha composited on white")


def test_16_bit_with_alpha(tmp_path):
    data = RNG.integers(0, 65536, (300, 520, 4), dtype=np.uint16)
    scaled = data.astype(np.float64) * 255.0 / 65535.0
    alpha = scaled[:, :, 3:] / 255.0
    expected = np.rint(scaled[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    path = _write(tmp_path / "rgba16.tif", data, photometric="rgb", extrasamples=["unassalpha"])
    _check(path, expected, "16-bit samples scaled to 8 bit; alpha composited on white")


def test_8_bit_rgb_is_unchanged_and_has_no_note(tmp_path):
    data = RNG.integers(0, 256, (300, 520, 3), dtype=np.uint8)
    _check(_write(tmp_path / "rgb8.tif", data, photometric="rgb"), data, None)


def test_strips_are_read_segment_by_segment(tmp_path):
    data = RNG.integers(0, 65536, (300, 520, 3), dtype=np.uint16)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, data, photometric="rgb", rowsperstrip=16, **RES)
    expected = np.rint(data.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    with open_slide(path) as slide:
        np.testing.assert_array_equal(slide.read_level_region(0, (0, 0), (520, 300)), expected)
        assert slide.native_tile_size(0) == (520, 16)


@pytest.mark.parametrize(
    ("data", "kwargs", "what"),
    [
        (np.zeros((300, 300, 4), np.uint8), {"photometric": "separated"}, "photometric interpretation 5"),
        (np.zeros((300, 300, 3), np.float32), {"photometric": "rgb"}, "float32 samples"),
        (np.zeros((300, 300, 3), np.uint32), {"photometric": "rgb"}, "uint32 samples"),
        (
            np.zeros((300, 300, 3), np.uint8),
            {"photometric": "rgb", "planarconfig": "separate"},
            "not a readable",
        ),
    ],
)
def test_other_formats_are_refused_in_one_line(tmp_path, data, kwargs, what):
    path = _write(tmp_path / "odd.tif", data, **kwargs)
    with pytest.raises(SlideFormatError, match=what):
        open_slide(path)
