"""inspect: one slide → what it is and how many 20x tissue tiles it yields (and optionally a thumbnail).

:func:`inspect_slide` opens, masks and tiles one slide and, when asked, writes a picture with the tissue
mask tinted and the kept tiles outlined (atomically: no partial file on error). The result is an
:class:`InspectResult` whose :meth:`~InspectResult.to_dict` gives the stable JSON keys of
``sequoia-clinic inspect --json``. Patient metadata is never part of it.

JSON keys: slide, format, vendor, width, height, levels [{index, width, height, downsample, mpp}],
mpp [x, y], mpp_source, objective_power, tissue_fraction, tiles {target_mpp, tile_px, read_level, read_px,
level_mpp, level_downsample, tile_size_level0, grid_rows, grid_columns, total, candidates, kept},
thumbnail (path or null), qc_warnings [{code, message}].

``qc_warnings`` holds the notes about reading the slide's pixels, with the codes and messages that
``predict`` and ``score`` give (:mod:`sequoia_clinic.pipeline.slide_notes`): ``pixels-converted`` (16-bit,
grayscale, palette or alpha converted to 8-bit RGB) and ``corrupt-tiles`` (stored tiles of the read level
that could not be decoded while the mask and the kept tiles were computed, and how many kept tiles lie over
them: the ones ``predict``/``score`` leave out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sequoia_clinic.errors import OptionError
from sequoia_clinic.fileio import atomic_path, check_output_dir
from sequoia_clinic.qc import QCWarning
from sequoia_clinic.settings import Settings

THUMBNAIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
THUMBNAIL_SIZE = 1024


@dataclass(frozen=True)
class InspectRequest:
    """Which slide to describe, its optional pixel-size override, and where to put a thumbnail."""

    slide: Path
    mpp: float | None = None
    thumbnail: Path | None = None


@dataclass(frozen=True)
class LevelRecord:
    index: int
    width: int
    height: int
    downsample: float
    mpp: float


@dataclass(frozen=True)
class InspectResult:
    """The description of one slide and its tile grid (no patient metadata)."""

    slide: str
    format: str
    vendor: str | None
    width: int
    height: int
    levels: tuple[LevelRecord, ...]
    mpp: tuple[float, float]
    mpp_source: str
    objective_power: float | None
    tissue_fraction: float
    tiles: dict[str, Any]  # the tile grid summary (TileGrid.summary keys + candidates, kept)
    thumbnail: str | None = None
    qc_warnings: tuple[QCWarning, ...] = ()  # pixel conversion, damaged stored tiles (as score reports them)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slide": self.slide,
            "format": self.format,
            "vendor": self.vendor,
            "width": self.width,
            "height": self.height,
            "levels": [
                {
                    "index": v.index,
                    "width": v.width,
                    "height": v.height,
                    "downsample": v.downsample,
                    "mpp": v.mpp,
                }
                for v in self.levels
            ],
            "mpp": list(self.mpp),
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "tissue_fraction": self.tissue_fraction,
            "tiles": dict(self.tiles),
            "thumbnail": self.thumbnail,
            "qc_warnings": [{"code": w.code.value, "message": w.message} for w in self.qc_warnings],
        }


def thumbnail_format(path: Path | None) -> str | None:
    """The picture format for ``path`` (None when no thumbnail is wanted), checked before any work."""
    if path is None:
        return None
    fmt = THUMBNAIL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OptionError(
            f"--thumbnail {path}: unsupported picture type", fix="Use a .png (or .jpg / .tif) file name."
        )
    if path.is_dir():
        raise OptionError(f"--thumbnail {path} is a folder", fix="Give a file name such as slide.png.")
    check_output_dir(path.parent)  # before any work, not after the slide was read
    return fmt


def inspect_slide(request: InspectRequest, settings: Settings) -> InspectResult:
    """Open, mask and tile one slide; write the thumbnail if asked."""
    # Imported here so that importing the pipeline package stays cheap for `--help`.
    from PIL import Image

    from sequoia_clinic.pipeline.slide_notes import corrupt_tiles_check, input_notes
    from sequoia_clinic.slides.opening import open_slide
    from sequoia_clinic.slides.overlay import render_overlay
    from sequoia_clinic.slides.tiling import build_tile_grid, select_tiles
    from sequoia_clinic.slides.tissue import compute_tissue_mask

    picture_format = thumbnail_format(request.thumbnail)
    with open_slide(request.slide, mpp=request.mpp) as slide:
        mask = compute_tissue_mask(slide, settings.tissue)
        candidates = build_tile_grid(slide, mask, settings.tiles)
        tissue_fraction = mask.tissue_fraction
        overlay_mask = mask if picture_format is not None else None  # only the picture needs it from here
        del mask  # (a packed mask grows with the slide: 3 MB on 80,000^2, held through every pixel check)
        grid = select_tiles(slide, candidates, settings.tiles)
        info = slide.info
        tiles = grid.summary()
        tiles.pop("pixel_checked")
        tiles.pop("kept")
        tiles["candidates"] = int(candidates.keep.sum())
        tiles["kept"] = int(grid.keep.sum())
        _, corrupt_note = corrupt_tiles_check(slide, grid, grid.kept_indices)
        notes = input_notes(info, corrupt_note)  # before the thumbnail: what predict/score would read
        written: str | None = None
        if request.thumbnail is not None and overlay_mask is not None:
            picture = render_overlay(slide, overlay_mask, grid, max_size=THUMBNAIL_SIZE)
            with atomic_path(request.thumbnail) as tmp:
                Image.fromarray(picture).save(tmp, format=picture_format)
            written = str(request.thumbnail)
        return InspectResult(
            slide=str(slide.path),
            format=info.format,
            vendor=info.vendor,
            width=info.dimensions[0],
            height=info.dimensions[1],
            levels=tuple(
                LevelRecord(
                    index=level,
                    width=width,
                    height=height,
                    downsample=round(info.level_downsamples[level], 6),
                    mpp=round(info.level_mpp(level), 6),
                )
                for level, (width, height) in enumerate(info.level_dimensions)
            ),
            mpp=(round(info.mpp[0], 6), round(info.mpp[1], 6)),
            mpp_source=info.mpp_source,
            objective_power=info.objective_power,
            tissue_fraction=round(tissue_fraction, 4),
            tiles=tiles,
            thumbnail=written,
            qc_warnings=notes,
        )
