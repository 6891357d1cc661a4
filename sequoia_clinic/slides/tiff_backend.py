"""Aperio SVS and other pyramidal TIFFs, read with tiffslide (regions) and tifffile (single tiles).

tiffslide parses the file (levels, vendor properties). Stored tiles and strips are decoded one at a time
through tifffile's own page decoder (JPEG, JPEG 2000, LZW ... whatever tifffile supports) after reading
their bytes with ``os.pread``, for single tiles and for regions alike: tiffslide has no per-tile API and its
zarr layer holds the GIL (and leaks asyncio noise on a corrupt tile), so this is what lets the tile reader
decode tiles in parallel threads, bounds each decode to one segment, and converts every pixel format of
``slides/pixels.py`` (16-bit, grayscale, palette, alpha) to 8-bit RGB. Only a level whose layout tifffile
cannot decode segment by segment falls back to tiffslide's region reader (8-bit RGB only). A damaged tile
is read as white and recorded (:meth:`Slide.corrupt_tiles`); past the allowance of ``slides/base.py`` the
slide is refused with :class:`~sequoia_clinic.errors.CorruptTileError`. At open time the file is checked against the
resource budget (segment size, compression ratio) before any pixel is decoded.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tiffslide

from sequoia_clinic.errors import CorruptTileError, SlideFormatError
from sequoia_clinic.slides.base import (
    BACKGROUND,
    MAX_TILE_PIXELS,
    Slide,
    SlideInfo,
    SlideMetadata,
    assemble_region,
    check_compression_ratio,
    level_to_level0,
)
from sequoia_clinic.slides.mpp import MppCandidates, mpp_from_tiff_resolution, resolve_mpp
from sequoia_clinic.slides.pixels import PixelFormat, pixel_format, to_rgb8
from sequoia_clinic.slides.quiet import captured_library_output, has_errors

_FALLBACK_TILE = (512, 512)  # block size used for levels stored in strips (no native tiles)
_FIX_DAMAGED = "The file is truncated or damaged; copy or export the slide again."
_FIX_FORMAT = "Export the slide as 8-bit RGB (Aperio SVS or a pyramidal RGB TIFF)."


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


class _Segments:
    """Direct access to the stored segments (tiles, or strips) of one pyramid level (one TIFF page).

    Every segment is decoded on its own by tifffile's page decoder, so one decode never exceeds the size
    of one segment (checked against :data:`~sequoia_clinic.slides.base.MAX_TILE_PIXELS` at open time), and
    its samples are converted to 8-bit RGB by :func:`sequoia_clinic.slides.pixels.to_rgb8`.
    """

    def __init__(self, page: Any, pixel_format: PixelFormat) -> None:
        self.page = page
        self.format = pixel_format
        if page.is_tiled:
            self.tile_w, self.tile_h = int(page.tilewidth), int(page.tilelength)
        else:  # strips: one segment is ``rowsperstrip`` full-width rows
            self.tile_w = int(page.imagewidth)
            self.tile_h = min(int(page.rowsperstrip) or int(page.imagelength), int(page.imagelength))
        self.columns = -(-int(page.imagewidth) // self.tile_w)
        self.offsets = page.dataoffsets
        self.counts = page.databytecounts
        self.decode = page.decode  # tifffile's decoder for this page's compression and colour space

    @staticmethod
    def usable(page: Any, shape: tuple[int, int]) -> bool:
        """Whether the page can be read segment by segment (else tiffslide's region reader is used)."""
        if page.is_tiled:
            tile_w, tile_h, depth = int(page.tilewidth), int(page.tilelength), int(page.tiledepth)
        else:
            tile_w = int(page.imagewidth)
            tile_h = min(int(page.rowsperstrip) or int(page.imagelength), int(page.imagelength))
            depth = 1
        return bool(
            depth == 1
            and tile_w > 0
            and tile_h > 0
            and (page.planarconfig == 1 or page.samplesperpixel == 1)
            and (int(page.imagelength), int(page.imagewidth)) == shape
            and len(page.dataoffsets)
            == -(-int(page.imagewidth) // tile_w) * -(-int(page.imagelength) // tile_h)
        )


class TiffSlideBackend(Slide):
    """A slide stored as a pyramidal TIFF (Aperio SVS, generic tiled TIFF)."""

    def __init__(
        self, path: Path, info: SlideInfo, handle: tiffslide.TiffSlide, levels: list[_Segments | None]
    ):
        super().__init__(path, info, (path,))
        self._handle = handle
        self._levels = levels
        self._fd = os.open(path, os.O_RDONLY)
        self._lock = threading.Lock()  # tiffslide/zarr reads are not documented as thread-safe

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._handle.close()

    def _read_inside(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if self._levels[level] is not None:  # our own segment decoder: bounded, no zarr/asyncio layer
            return assemble_region(
                self.info.level_dimensions[level],
                self.native_tile_size(level),
                lambda col, row: self.read_native_tile(level, col, row),
                (x, y),
                (width, height),
            )
        downsample = self.info.level_downsamples[level]
        location = (level_to_level0(x, downsample), level_to_level0(y, downsample))
        with self._lock, captured_library_output():
            region = self._handle.read_region(location, level, (width, height), as_array=True, padding=False)
        return np.ascontiguousarray(region[..., :3], dtype=np.uint8)

    def native_tile_size(self, level: int) -> tuple[int, int]:
        tiled = self._levels[level]
        return (tiled.tile_w, tiled.tile_h) if tiled is not None else _FALLBACK_TILE

    def read_native_tile(self, level: int, column: int, row: int) -> np.ndarray:
        level_w, level_h = self.info.level_dimensions[level]
        tiled = self._levels[level]
        tile_w, tile_h = self.native_tile_size(level)
        x, y = column * tile_w, row * tile_h
        width, height = min(tile_w, level_w - x), min(tile_h, level_h - y)
        if tiled is None:
            return self._guarded_read(level, x, y, width, height)
        index = row * tiled.columns + column
        count = int(tiled.counts[index])
        if count == 0:  # a tile the scanner never wrote: empty glass
            return np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        data = os.pread(self._fd, count, int(tiled.offsets[index]))
        if len(data) != count:
            raise SlideFormatError("tile data ends before the end of the file says", self.path, _FIX_DAMAGED)
        self._tile_decoded()
        try:
            # No log capture here: tifffile's decode closures raise rather than log, and the capture's
            # process-wide lock would serialise the decode threads (2 threads were slower than 1).
            segment, _, _ = tiled.decode(
                data,
                index,
                jpegtables=tiled.page.jpegtables,
                jpegheader=getattr(tiled.page, "jpegheader", None),
            )
            if segment is None:
                return np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
            samples = segment.reshape(segment.shape[-3:])[:height, :width]
            if samples.shape[:2] != (height, width):
                raise ValueError("a tile is smaller than the file says")
        except Exception as exc:  # damaged tile data: white, counted, refused above the allowance
            error = CorruptTileError(
                f"a tile could not be decoded ({type(exc).__name__})", self.path, _FIX_DAMAGED
            )
            return self._tile_corrupt(level, column, row, error, (height, width))
        return to_rgb8(samples, tiled.format)


def _iso_day(value: str | None) -> str | None:
    """Aperio 'MM/DD/YY' (or an ISO-like date) → 'YYYY-MM-DD'; anything unparsable → None."""
    if not value or not value.strip():
        return None
    day = value.strip().split()[0]
    for pattern in ("%m/%d/%y", "%m/%d/%Y", "%Y-%m-%d", "%Y%m%d", "%Y:%m:%d"):
        try:
            return dt.datetime.strptime(day, pattern).date().isoformat()
        except ValueError:
            continue
    return None


def _metadata(properties: dict[str, Any]) -> SlideMetadata:
    date = _str_or_none(properties.get("aperio.Date"))
    time = _str_or_none(properties.get("aperio.Time"))
    scanner = _str_or_none(properties.get("aperio.ScanScope ID"))
    return SlideMetadata(
        barcode=_str_or_none(properties.get("aperio.Barcode")),
        scan_date=" ".join(part for part in (date, time) if part) or None,
        scan_day=_iso_day(date),
        app_mag=_str_or_none(properties.get("aperio.AppMag")),
        scanner=f"Aperio ScanScope {scanner}" if scanner else None,
        manufacturer="Aperio" if properties.get("tiffslide.vendor") == "aperio" else None,
    )


def _resolution_tags(page: Any) -> tuple[Any, Any, int | None]:
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    x_res, y_res = tags.get("XResolution"), tags.get("YResolution")
    return (
        x_res.value if x_res is not None else None,
        y_res.value if y_res is not None else None,
        int(unit.value) if unit is not None else None,
    )


def _mpp_candidates(handle: tiffslide.TiffSlide, page0: Any) -> MppCandidates:
    props = handle.properties
    vendor: tuple[float, float] | None = None
    aperio = _float_or_none(props.get("aperio.MPP"))
    if aperio is not None:
        vendor = (aperio, aperio)
    tiff_resolution = mpp_from_tiff_resolution(*_resolution_tags(page0))
    if vendor is None and tiff_resolution is None:
        # tiffslide also knows other vendor schemes (e.g. OME physical sizes) and reports them here
        mpp_x, mpp_y = (
            _float_or_none(props.get("tiffslide.mpp-x")),
            _float_or_none(props.get("tiffslide.mpp-y")),
        )
        if mpp_x is not None and mpp_y is not None:
            vendor = (mpp_x, mpp_y)
    return MppCandidates(vendor, tiff_resolution, _float_or_none(props.get("tiffslide.objective-power")))


def _check_complete(path: Path, pages: list[Any]) -> None:
    size = path.stat().st_size
    for page in pages:
        ends = [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts, strict=True) if int(c)]
        if ends and max(ends) > size:
            raise SlideFormatError("the file is shorter than its image data (truncated)", path, _FIX_DAMAGED)


def _segment_pixels(page: Any) -> int:
    if page.is_tiled:
        return int(page.tilewidth) * int(page.tilelength) * max(1, int(page.tiledepth))
    rows = int(page.rowsperstrip) or int(page.imagelength)
    return min(rows, int(page.imagelength)) * int(page.imagewidth)


def _check_budget(path: Path, pages: list[Any]) -> None:
    """Refuse pages whose stored segments or compression ratio exceed the budget of ``slides/base.py``."""
    fix = (
        "This is not a slide the tool can read safely; check the file or export it again as a pyramidal TIFF."
    )
    decoded = stored = 0
    for page in pages:
        if _segment_pixels(page) > MAX_TILE_PIXELS:
            raise SlideFormatError(
                f"stores its pixels in blocks of {_segment_pixels(page):,} px, above the limit of "
                f"{MAX_TILE_PIXELS:,} px per block",
                path,
                "Save it as a tiled pyramidal TIFF (e.g. 256 or 512 px tiles).",
            )
        written = sum(1 for count in page.databytecounts if int(count))
        sample_bytes = int(page.samplesperpixel) * np.dtype(page.dtype or np.uint8).itemsize
        decoded += written * _segment_pixels(page) * sample_bytes
        stored += sum(int(count) for count in page.databytecounts)
    check_compression_ratio(path, decoded, stored, fix)


def open_tiff(path: Path, user_mpp: float | None) -> TiffSlideBackend:
    """Open an SVS / pyramidal TIFF; every failure becomes a SlideFormatError or MissingMetadataError."""
    handle: tiffslide.TiffSlide | None = None
    with captured_library_output() as records:
        try:
            handle = tiffslide.TiffSlide(path)
            series = handle.ts_tifffile.series[int(handle.properties["tiffslide.series-index"])]
            pages = [level.pages[0] for level in series.levels]
            axes = handle.properties.get("tiffslide.series-axes")
            dimensions = tuple((int(w), int(h)) for w, h in handle.level_dimensions)
            downsamples = tuple(float(d) for d in handle.level_downsamples)
            properties = dict(handle.properties)
        except Exception as exc:
            if handle is not None:
                handle.close()
            raise SlideFormatError(
                f"not a readable SVS/TIFF slide ({type(exc).__name__})",
                path,
                "Pass an Aperio .svs, a pyramidal .tif or a DICOM WSI folder; if it is one, it is damaged.",
            ) from exc
    if has_errors(records):
        handle.close()
        raise SlideFormatError("the TIFF structure is damaged (bad offsets)", path, _FIX_DAMAGED)
    try:
        if axes not in ("YXS", "YX"):
            raise SlideFormatError(
                f"the image is not a 2-D colour slide (axes {axes})",
                path,
                "Pass a brightfield (RGB) H&E slide.",
            )
        formats = [pixel_format(page, path) for page in pages]
        _check_budget(path, pages)
        _check_complete(path, pages)
        levels = [
            _Segments(page, fmt) if _Segments.usable(page, (h, w)) else None
            for page, fmt, (w, h) in zip(pages, formats, dimensions, strict=True)
        ]
        if any(level is None and fmt.note is not None for level, fmt in zip(levels, formats, strict=True)):
            raise SlideFormatError(
                "stores a non-RGB pixel format in a layout the tool cannot convert", path, _FIX_FORMAT
            )
        mpp, source = resolve_mpp(path, user_mpp, _mpp_candidates(handle, pages[0]))
    except BaseException:
        handle.close()
        raise
    vendor = _str_or_none(properties.get("tiffslide.vendor"))
    info = SlideInfo(
        format="svs" if vendor == "aperio" else "tiff",
        vendor=vendor,
        level_dimensions=dimensions,
        level_downsamples=downsamples,
        mpp=mpp,
        mpp_source=source,
        objective_power=_float_or_none(properties.get("tiffslide.objective-power")),
        metadata=_metadata(properties),
        pixel_note=formats[0].note,
    )
    return TiffSlideBackend(path, info, handle, levels)
