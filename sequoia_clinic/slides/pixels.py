"""Stored TIFF samples → 8-bit RGB, or a refusal: the pixel formats a slide may use.

A slide's pages are described once at open time (:func:`pixel_format`), and every decoded segment is then
converted with :func:`to_rgb8`:

* 8-bit RGB is used as stored; 16-bit (or 9–15 bits stored in 16-bit words) is scaled to 0–255 by the
  stored bit depth (``round(v * 255 / (2**bits - 1))``);
* grayscale (``MINISBLACK``; ``MINISWHITE`` inverted) is repeated into R, G and B;
* a palette (``PALETTE``) is looked up in the TIFF colour map (16-bit entries, scaled by 257);
* an alpha channel is composited on white (unassociated: ``c*a + 255*(1-a)``; associated, i.e.
  premultiplied: ``c + 255*(1-a)``).

Anything else (CMYK, Lab, floating point, signed or more than 16-bit samples, planar colour, several extra
channels) is refused with one line. ``PixelFormat.note`` says what was converted, for a QC note.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from sequoia_clinic.errors import SlideFormatError

_FIX = "Export the slide as 8-bit RGB (Aperio SVS or a pyramidal RGB TIFF)."
_PHOTOMETRIC_MINISWHITE, _PHOTOMETRIC_MINISBLACK, _PHOTOMETRIC_RGB, _PHOTOMETRIC_PALETTE = 0, 1, 2, 3
_PHOTOMETRIC_YCBCR = 6  # JPEG-compressed YCbCr: the decoder returns RGB
_YCBCR_DECODED = (6, 7, 33003, 33005, 34712)  # compressions whose decoders return RGB from YCbCr (JPEG, J2K)
_EXTRASAMPLE_ASSOCALPHA, _EXTRASAMPLE_UNASSALPHA = 1, 2


class Colour(Enum):
    """How the stored samples carry colour."""

    RGB = "rgb"
    GRAY = "gray"
    GRAY_INVERTED = "gray-inverted"  # MINISWHITE
    PALETTE = "palette"


class Alpha(Enum):
    """Whether the stored samples carry alpha, and how."""

    NONE = "none"
    UNASSOCIATED = "unassociated"
    ASSOCIATED = "associated"  # premultiplied


@dataclass(frozen=True)
class PixelFormat:
    """What one page stores and how :func:`to_rgb8` turns it into 8-bit RGB."""

    colour: Colour
    alpha: Alpha
    bits: int  # stored bits per sample (1..16)
    palette: np.ndarray | None = None  # (2**bits, 3) uint8 for Colour.PALETTE

    @property
    def note(self) -> str | None:
        """A QC note describing a conversion, or None for plain 8-bit RGB."""
        parts = []
        if self.bits != 8:
            parts.append(f"{self.bits}-bit samples scaled to 8 bit")
        if self.colour is not Colour.RGB:
            parts.append(f"{self.colour.value} converted to RGB")
        if self.alpha is not Alpha.NONE:
            parts.append("alpha composited on white")
        return "; ".join(parts) or None


def _refuse(path: Path, what: str) -> SlideFormatError:
    return SlideFormatError(f"unsupported pixel format ({what})", path, _FIX)


def pixel_format(page: Any, path: Path) -> PixelFormat:
    """The :class:`PixelFormat` of a tifffile page, or a SlideFormatError naming what is unsupported."""
    dtype = np.dtype(page.dtype) if page.dtype is not None else None
    if dtype is None or dtype.kind != "u" or dtype.itemsize > 2:
        raise _refuse(path, f"{dtype} samples")
    bits = int(page.bitspersample)
    if not 1 <= bits <= 8 * dtype.itemsize:
        raise _refuse(path, f"{bits} bits per sample")
    photometric = int(page.photometric)
    samples = int(page.samplesperpixel)
    extras = tuple(int(e) for e in (page.extrasamples or ()))
    colour_samples = {
        _PHOTOMETRIC_RGB: 3,
        _PHOTOMETRIC_YCBCR: 3,
        _PHOTOMETRIC_MINISBLACK: 1,
        _PHOTOMETRIC_MINISWHITE: 1,
        _PHOTOMETRIC_PALETTE: 1,
    }.get(photometric)
    if colour_samples is None:
        raise _refuse(path, f"photometric interpretation {photometric}")
    if photometric == _PHOTOMETRIC_YCBCR and int(page.compression) not in _YCBCR_DECODED:
        raise _refuse(path, f"YCbCr samples with compression {int(page.compression)}")
    if samples not in (colour_samples, colour_samples + 1) or len(extras) != samples - colour_samples:
        raise _refuse(path, f"{samples} samples per pixel")
    alpha = Alpha.NONE
    if extras:
        alpha = {_EXTRASAMPLE_ASSOCALPHA: Alpha.ASSOCIATED, _EXTRASAMPLE_UNASSALPHA: Alpha.UNASSOCIATED}.get(
            extras[0],
            Alpha.UNASSOCIATED,  # an unspecified extra sample is treated as plain alpha
        )
    colour = {
        _PHOTOMETRIC_MINISBLACK: Colour.GRAY,
        _PHOTOMETRIC_MINISWHITE: Colour.GRAY_INVERTED,
        _PHOTOMETRIC_PALETTE: Colour.PALETTE,
    }.get(photometric, Colour.RGB)
    palette = None
    if colour is Colour.PALETTE:
        colormap = getattr(page, "colormap", None)
        if colormap is None or bits > 8:
            raise _refuse(path, "a palette without a usable colour map")
        table = np.asarray(colormap)
        if table.ndim != 2 or table.shape[0] != 3 or table.shape[1] < 2**bits:
            raise _refuse(path, "a palette without a usable colour map")
        table = table[:, : 2**bits].T.astype(np.float64)
        scale = 257.0 if table.max() > 255 else 1.0  # TIFF colour maps are 16 bit; some writers store 8
        palette = np.clip(np.rint(table / scale), 0, 255).astype(np.uint8)
    return PixelFormat(colour, alpha, bits, palette)


def _scale(values: np.ndarray, bits: int) -> np.ndarray:
    """Samples of ``bits`` stored bits → float 0..255 (no rounding yet)."""
    if bits == 8 and values.dtype == np.uint8:
        return values.astype(np.float64)
    top = float(2**bits - 1)
    return np.minimum(values.astype(np.float64), top) * (255.0 / top)


def to_rgb8(samples: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """(h, w[, s]) decoded samples → (h, w, 3) uint8 RGB as described by ``fmt``."""
    if samples.ndim == 2:
        samples = samples[:, :, None]
    plain = fmt.colour is Colour.RGB and fmt.alpha is Alpha.NONE and fmt.bits == 8
    if plain and samples.dtype == np.uint8 and samples.shape[2] >= 3:
        return np.ascontiguousarray(samples[:, :, :3])
    if fmt.colour is Colour.PALETTE:
        assert fmt.palette is not None
        index = np.minimum(samples[:, :, 0].astype(np.intp), fmt.palette.shape[0] - 1)
        colour = fmt.palette[index].astype(np.float64)
        rest = samples[:, :, 1:]
    elif fmt.colour is Colour.RGB:
        colour = _scale(samples[:, :, :3], fmt.bits)
        rest = samples[:, :, 3:]
    else:
        grey = _scale(samples[:, :, :1], fmt.bits)
        if fmt.colour is Colour.GRAY_INVERTED:
            grey = 255.0 - grey
        colour = np.repeat(grey, 3, axis=2)
        rest = samples[:, :, 1:]
    if fmt.alpha is not Alpha.NONE and rest.shape[2]:
        alpha = _scale(rest[:, :, :1], fmt.bits) / 255.0
        if fmt.alpha is Alpha.ASSOCIATED:
            colour = colour + 255.0 * (1.0 - alpha)
        else:
            colour = colour * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(colour), 0, 255).astype(np.uint8)
