"""The QC notes about reading a slide's pixels, shared by ``predict``/``score`` and ``inspect``.

Two things can happen while a slide's stored pixels are read, and each is told in one coded note:

* the stored pixel format was converted to 8-bit RGB (16-bit scaled by its bit depth, grayscale or a
  palette expanded, alpha composited on white): :data:`~sequoia_clinic.qc.QCCode.PIXELS_CONVERTED`;
* stored tiles could not be decoded (read as white); the 20x tiles over them are left out:
  :data:`~sequoia_clinic.qc.QCCode.CORRUPT_TILES` (the slide refuses itself past its allowance).

The messages are the same wherever they are shown (``result.json``, the report, ``predict``'s summary,
``inspect``), so that a reader can match them.
"""

from __future__ import annotations

import numpy as np

from sequoia_clinic.qc import QCCode, QCWarning
from sequoia_clinic.slides.base import Slide, SlideInfo
from sequoia_clinic.slides.grid import TileGrid


def pixel_conversion_note(info: SlideInfo) -> QCWarning | None:
    """The note for a slide whose stored pixels were converted to 8-bit RGB (None when they were not)."""
    if info.pixel_note is None:
        return None
    return QCWarning(QCCode.PIXELS_CONVERTED, f"slide pixels converted: {info.pixel_note}")


def corrupt_tiles_check(
    slide: Slide, grid: TileGrid, indices: np.ndarray
) -> tuple[np.ndarray, QCWarning | None]:
    """Which grid tiles ``indices`` lie clear of undecodable stored tiles, and the note saying so.

    Returns a (len(indices),) bool array, True for a tile that overlaps no stored tile of the grid's read
    level that could not be decoded, and the note (None when no stored tile of that level failed). Only the
    stored tiles decoded (or tried) so far are known: call this after the slide was read.
    """
    indices = np.asarray(indices, dtype=np.int64)
    corrupt = slide.corrupt_tiles(grid.level)
    if not corrupt:
        return np.ones(indices.shape, dtype=bool), None
    tile_w, tile_h = slide.native_tile_size(grid.level)
    read = grid.read_px
    corners = grid.level_coords()[indices]
    clear = np.array(
        [
            not any(
                (col, row) in corrupt
                for row in range(max(int(y), 0) // tile_h, -(-(int(y) + read) // tile_h))
                for col in range(max(int(x), 0) // tile_w, -(-(int(x) + read) // tile_w))
            )
            for x, y in corners
        ],
        dtype=bool,
    ).reshape(indices.shape)
    note = QCWarning(
        QCCode.CORRUPT_TILES,
        f"{slide.corrupt_tile_count} stored tile(s) of the slide could not be decoded; "
        f"{int((~clear).sum())} tile(s) over them were left out",
    )
    return clear, note


def input_notes(info: SlideInfo, corrupt_note: QCWarning | None) -> tuple[QCWarning, ...]:
    """The slide-reading notes in their reported order: pixel conversion, then damaged stored tiles."""
    pixel = pixel_conversion_note(info)
    return tuple(note for note in (pixel, corrupt_note) if note is not None)
