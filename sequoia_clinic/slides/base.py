"""The format-independent slide interface: records (SlideInfo, SlideMetadata) and the abstract ``Slide``.

A ``Slide`` is one pyramid of RGB levels. Backends (``tiff_backend``, ``dicom_backend``) implement three
small primitives: read an in-bounds rectangle of a level, report a level's native tile size, and decode one
native tile. Everything else (level-0 addressing, white padding, thumbnails, band-wise downscaling) is
written once here, so both formats behave identically.

Also here: the resource budget a slide must fit when it is opened (``MAX_*``, :func:`check_budget`), and
the record of stored tiles that could not be decoded (read as white; refused past ``CORRUPT_TILE_ALLOWANCE``
+ ``MAX_CORRUPT_SHARE`` of the tiles decoded).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from sequoia_clinic.errors import CorruptTileError, SequoiaError, SlideFormatError

BACKGROUND = 255  # white: the colour of empty glass, used for every pixel outside the slide
_BAND_BYTES = 64 << 20  # memory budget of one band when a whole level is read and downscaled

# The resource budget of one slide, checked when it is opened (before any pixel is decoded); a slide
# above it is refused in one line. Real scanners stay far below each limit.
MAX_LEVEL0_SIDE = 500_000  # px, width or height of the full-resolution level
MAX_LEVEL0_PIXELS = 20_000_000_000  # 20 gigapixels
MAX_OVERVIEW_PIXELS = 100_000_000  # the coarsest level is decoded whole (band by band) for the tissue mask
MAX_TILE_PIXELS = 1 << 22  # one stored tile (or strip) is decoded at once: at most 4 megapixels
MAX_COMPRESSION_RATIO = 1000  # decoded bytes per stored byte over a file: more is a decompression bomb
MIN_BOMB_BYTES = 256 << 20  # ... once the file declares more than this many decoded bytes (small files pass)
# Stored tiles that cannot be decoded are read as white and counted (the tiles over them are left out of
# the prediction); more than this allowance plus this share of the stored tiles decoded refuses the slide.
CORRUPT_TILE_ALLOWANCE = 2
MAX_CORRUPT_SHARE = 0.05


@dataclass(frozen=True)
class SlideMetadata:
    """Descriptive attributes of a slide. All values are strings or None; may contain PHI — never log."""

    patient_name: str | None = None
    patient_id: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    accession_number: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_class_uid: str | None = None  # DICOM: the level-0 VOLUME instance a report references
    sop_instance_uid: str | None = None
    referring_physician_name: str | None = None
    institution_name: str | None = None
    specimen_identifier: str | None = None
    specimen_description: str | None = None
    specimen_label: str | None = None  # what a report prints as the specimen (DICOM: short description or id)
    manufacturer: str | None = None
    scanner: str | None = None
    device_serial_number: str | None = None
    barcode: str | None = None
    scan_date: str | None = None  # as recorded (Aperio 'MM/DD/YY HH:MM:SS', DICOM DT/DA)
    scan_day: str | None = None  # the scan (DICOM: else study) date as ISO 'YYYY-MM-DD'; None if unparsable
    app_mag: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    def __repr__(self) -> str:
        """Names of the recorded fields only, values masked: reprs end up in tracebacks and debuggers."""
        shown = ", ".join(
            f"{f.name}='…'" for f in dataclasses.fields(self) if getattr(self, f.name) is not None
        )
        return f"{type(self).__name__}({shown})"


@dataclass(frozen=True)
class SlideInfo:
    """What a slide is: format, pyramid geometry, pixel size and where it came from, metadata."""

    format: str  # 'svs' | 'tiff' | 'dicom'
    vendor: str | None
    level_dimensions: tuple[tuple[int, int], ...]  # (width, height) per level, level 0 first
    level_downsamples: tuple[float, ...]
    mpp: tuple[float, float]  # (x, y) micrometres per pixel at level 0
    mpp_source: str  # 'user' | 'vendor' | 'tiff-resolution' | 'objective-power'
    objective_power: float | None
    metadata: SlideMetadata
    pixel_note: str | None = None  # how stored pixels were converted to 8-bit RGB (16-bit, gray, alpha ...)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def level_mpp(self, level: int) -> float:
        """Mean of x and y pixel size (um/px) at ``level``."""
        return 0.5 * (self.mpp[0] + self.mpp[1]) * self.level_downsamples[level]


def level0_to_level(coordinate: float, downsample: float) -> int:
    """Level pixel that contains level-0 pixel ``coordinate`` (floor, as OpenSlide and tiffslide do)."""
    return math.floor(coordinate / downsample)


def level_to_level0(coordinate: int, downsample: float) -> int:
    """Smallest level-0 integer coordinate that maps back (by :func:`level0_to_level`) onto ``coordinate``."""
    value = math.ceil(coordinate * downsample - 1e-9)
    while level0_to_level(value, downsample) < coordinate:
        value += 1
    while value > 0 and level0_to_level(value - 1, downsample) >= coordinate:
        value -= 1
    return value


def assemble_region(
    level_size: tuple[int, int],
    tile_size: tuple[int, int],
    fetch: Callable[[int, int], np.ndarray],
    location: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """Cut a (w, h) region at ``location`` (level pixels) out of stored tiles returned by ``fetch(col, row)``.

    Tiles are cropped to the level bounds; everything outside the level is white.
    """
    x, y = location
    width, height = size
    tile_w, tile_h = tile_size
    out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, level_size[0]), min(y + height, level_size[1])
    for row in range(y0 // tile_h, -(-y1 // tile_h)) if y1 > y0 else ():
        for col in range(x0 // tile_w, -(-x1 // tile_w)) if x1 > x0 else ():
            tile = fetch(col, row)
            tx, ty = col * tile_w, row * tile_h
            ix0, iy0 = max(x0, tx), max(y0, ty)
            ix1, iy1 = min(x1, tx + tile.shape[1]), min(y1, ty + tile.shape[0])
            if ix1 > ix0 and iy1 > iy0:
                out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = tile[iy0 - ty : iy1 - ty, ix0 - tx : ix1 - tx]
    return out


def check_budget(
    path: Path, level_dimensions: tuple[tuple[int, int], ...], tile_sizes: list[tuple[int, int]]
) -> None:
    """Refuse a slide whose declared geometry exceeds the resource budget (the ``MAX_*`` limits above)."""
    fix = (
        "This is not a slide the tool can read safely; check the file or export it again as a pyramidal TIFF."
    )
    width, height = level_dimensions[0]
    if width <= 0 or height <= 0:
        raise SlideFormatError(f"declares an empty image ({width}x{height} px)", path, fix)
    if max(width, height) > MAX_LEVEL0_SIDE or width * height > MAX_LEVEL0_PIXELS:
        raise SlideFormatError(
            f"declares {width}x{height} px, above the limit of {MAX_LEVEL0_SIDE:,} px a side "
            f"and {MAX_LEVEL0_PIXELS // 10**9} gigapixels",
            path,
            fix,
        )
    smallest = min(w * h for w, h in level_dimensions)
    if smallest > MAX_OVERVIEW_PIXELS:
        raise SlideFormatError(
            f"has no pyramid level of at most {MAX_OVERVIEW_PIXELS // 10**6} megapixels for the overview "
            f"(the smallest has {smallest / 10**6:,.0f})",
            path,
            "Save it as a pyramidal TIFF (with reduced levels), e.g. with vips tiffsave --pyramid.",
        )
    for tile_w, tile_h in tile_sizes:
        if tile_w <= 0 or tile_h <= 0 or tile_w * tile_h > MAX_TILE_PIXELS:
            raise SlideFormatError(
                f"stores its pixels in blocks of {tile_w}x{tile_h} px, above the limit of "
                f"{MAX_TILE_PIXELS // 2**20} megapixels per block",
                path,
                "Save it as a tiled pyramidal TIFF (e.g. 256 or 512 px tiles).",
            )


def check_compression_ratio(path: Path, decoded: int, stored: int, fix: str) -> None:
    """Refuse a slide declaring ``decoded`` pixel bytes in ``stored`` bytes of tile data above the ratio budget.

    Both counts come from the file's structure (tile sizes, byte counts), never from decoding.
    """
    if decoded > MAX_COMPRESSION_RATIO * max(stored, 1) and decoded > MIN_BOMB_BYTES:
        raise SlideFormatError(
            f"declares {decoded / 2**30:,.1f} GiB of pixels in {stored / 2**20:,.1f} MiB of data, "
            f"a compression ratio above {MAX_COMPRESSION_RATIO}:1 (a decompression bomb)",
            path,
            fix,
        )


class Slide(ABC):
    """One whole-slide image, opened read-only. Use :func:`sequoia_clinic.slides.open_slide` to get one."""

    def __init__(self, path: Path, info: SlideInfo, files: tuple[Path, ...]) -> None:
        self.path = path
        self.info = info
        self.files = files  # the files that make up the slide (one for TIFF, the series for DICOM)
        self._tile_lock = threading.Lock()
        self._decoded_tiles = 0
        self._corrupt: set[tuple[int, int, int]] = set()  # (level, column, row) of undecodable stored tiles

    # -- backend primitives -------------------------------------------------------------------------
    @abstractmethod
    def _read_inside(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """HxWx3 uint8 of a rectangle in level pixels that lies fully inside the level."""

    @abstractmethod
    def native_tile_size(self, level: int) -> tuple[int, int]:
        """(width, height) of the stored tiles of ``level`` (the unit :meth:`read_native_tile` decodes)."""

    @abstractmethod
    def read_native_tile(self, level: int, column: int, row: int) -> np.ndarray:
        """Decode one stored tile; cropped to the level bounds. Must be safe to call from several threads."""

    @abstractmethod
    def close(self) -> None:
        """Release file handles."""

    # -- damaged stored tiles ----------------------------------------------------------------------
    def _tile_decoded(self) -> None:
        with self._tile_lock:
            self._decoded_tiles += 1

    def _tile_corrupt(
        self, level: int, column: int, row: int, error: CorruptTileError, size: tuple[int, int]
    ) -> np.ndarray:
        """Record an undecodable stored tile and give it as white, (height, width) = ``size``; refuse the
        slide once too many are (see ``MAX_CORRUPT_SHARE``)."""
        with self._tile_lock:
            self._corrupt.add((level, column, row))
            count, decoded = len(self._corrupt), self._decoded_tiles
        if count > CORRUPT_TILE_ALLOWANCE + MAX_CORRUPT_SHARE * decoded:
            raise CorruptTileError(
                f"{count} of {decoded} stored tiles read so far cannot be decoded, above the limit of "
                f"{CORRUPT_TILE_ALLOWANCE} + {MAX_CORRUPT_SHARE:.0%}",
                self.path,
                "The file is damaged; copy or export the slide again.",
            ) from error
        return np.full((*size, 3), BACKGROUND, dtype=np.uint8)

    def corrupt_tiles(self, level: int) -> frozenset[tuple[int, int]]:
        """(column, row) of the stored tiles of ``level`` that could not be decoded (read as white)."""
        with self._tile_lock:
            return frozenset((c, r) for lvl, c, r in self._corrupt if lvl == level)

    @property
    def corrupt_tile_count(self) -> int:
        with self._tile_lock:
            return len(self._corrupt)

    # -- shared behaviour ---------------------------------------------------------------------------
    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        width, height = self.info.dimensions
        return f"<{type(self).__name__} {self.path.name} {self.info.format} {width}x{height}>"

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.info.level_count:
            raise ValueError(f"level {level} out of range 0..{self.info.level_count - 1}")

    def read_region(self, location_level0: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` (w, h) pixels of ``level`` whose top-left is at level-0 ``location``; outside = white."""
        self._check_level(level)
        downsample = self.info.level_downsamples[level]
        x = level0_to_level(location_level0[0], downsample)
        y = level0_to_level(location_level0[1], downsample)
        return self.read_level_region(level, (x, y), size)

    def read_level_region(self, level: int, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Like :meth:`read_region` but ``location`` is in the pixels of ``level`` itself."""
        self._check_level(level)
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        x, y = int(location[0]), int(location[1])
        level_w, level_h = self.info.level_dimensions[level]
        out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, level_w), min(y + height, level_h)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._guarded_read(level, x0, y0, x1 - x0, y1 - y0)
        return out

    def _guarded_read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        try:
            return self._read_inside(level, x, y, width, height)
        except SequoiaError:
            raise
        except Exception as exc:  # a decoder error means damaged pixel data: a user-facing error
            raise SlideFormatError(
                f"pixel data could not be decoded ({type(exc).__name__})",
                self.path,
                "The file is damaged or uses an unsupported compression; re-export the slide.",
            ) from exc

    def read_level_downscaled(self, level: int, factor: int) -> np.ndarray:
        """The whole of ``level`` shrunk by an integer ``factor`` with box (area) averaging, band by band.

        Memory stays bounded by the band size whatever the slide size. Output is ceil(w/f) x ceil(h/f);
        the last row/column averages only the pixels that exist.
        """
        self._check_level(level)
        factor = max(1, int(factor))
        _, level_h = self.info.level_dimensions[level]
        return self.read_level_downscaled_rows(level, factor, 0, -(-level_h // factor))

    def read_level_downscaled_rows(self, level: int, factor: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of :meth:`read_level_downscaled` (same pixels), reading only the level rows under them.

        Each output row is the box average of its own ``factor`` level rows (the last one of the pixels that
        exist), so any run of rows equals the same rows of the whole picture.
        """
        self._check_level(level)
        factor = max(1, int(factor))
        level_w, level_h = self.info.level_dimensions[level]
        rows = -(-level_h // factor)
        start, stop = max(0, int(start)), min(rows, int(stop))
        if stop <= start:
            return np.zeros((0, -(-level_w // factor), 3), dtype=np.uint8)
        rows_per_band = max(1, _BAND_BYTES // (3 * level_w * factor)) * factor
        bands = []
        end = min(stop * factor, level_h)
        for top in range(start * factor, end, rows_per_band):
            height = min(rows_per_band, end - top)
            band = self._guarded_read(level, 0, top, level_w, height)  # inside the level: no white margin
            bands.append(np.asarray(Image.fromarray(band).reduce(factor)) if factor > 1 else band)
        return bands[0] if len(bands) == 1 else np.concatenate(bands, axis=0)

    def thumbnail(self, max_size: int) -> np.ndarray:
        """RGB uint8 picture of the whole slide whose longest side is at most ``max_size`` pixels."""
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        width, height = self.info.dimensions
        scale = min(1.0, max_size / max(width, height))
        target = (max(1, min(max_size, round(width * scale))), max(1, min(max_size, round(height * scale))))
        level = self.level_at_least(target)
        level_w, _ = self.info.level_dimensions[level]
        factor = max(1, level_w // target[0])
        image = self.read_level_downscaled(level, factor)
        if (image.shape[1], image.shape[0]) != target:
            image = np.asarray(Image.fromarray(image).resize(target, Image.Resampling.BOX))
        return image

    def level_at_least(self, size: tuple[int, int]) -> int:
        """The coarsest level whose width and height are both at least ``size`` (level 0 if none is)."""
        best = 0
        for level, (width, height) in enumerate(self.info.level_dimensions):
            if width >= size[0] and height >= size[1]:
                best = level
        return best
