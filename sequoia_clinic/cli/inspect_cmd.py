"""``sequoia-clinic inspect SLIDE``: what a slide is and how many 20x tissue tiles it yields.

Prints format, dimensions, pyramid levels, pixel size and its source, objective power, tissue fraction
and the tile counts; ``--json`` prints one JSON object instead (keys below, stable); ``--thumbnail`` writes
a picture with the tissue mask tinted and the kept tiles outlined (atomically: no partial file on error).
Patient metadata is never printed.

JSON keys: slide, format, vendor, width, height, levels [{index, width, height, downsample, mpp}],
mpp [x, y], mpp_source, objective_power, tissue_fraction, tiles {target_mpp, tile_px, read_level, read_px,
level_mpp, level_downsample, tile_size_level0, grid_rows, grid_columns, total, candidates, kept},
thumbnail (path or null).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.errors import OptionError
from sequoia_clinic.fileio import atomic_path, check_output_dir
from sequoia_clinic.settings import Settings

if TYPE_CHECKING:
    from sequoia_clinic.slides import Slide, TileGrid

THUMBNAIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
THUMBNAIL_SIZE = 1024


def _thumbnail_format(path: Path | None) -> str | None:
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


def slide_report(
    slide: Slide, candidates: TileGrid, grid: TileGrid, tissue_fraction: float
) -> dict[str, Any]:
    """The JSON-ready description of an opened slide and its tile grid (no patient metadata)."""
    info = slide.info
    tiles = grid.summary()
    tiles.pop("pixel_checked")
    tiles.pop("kept")
    tiles["candidates"] = int(candidates.keep.sum())
    tiles["kept"] = int(grid.keep.sum())
    return {
        "slide": str(slide.path),
        "format": info.format,
        "vendor": info.vendor,
        "width": info.dimensions[0],
        "height": info.dimensions[1],
        "levels": [
            {
                "index": level,
                "width": width,
                "height": height,
                "downsample": round(info.level_downsamples[level], 6),
                "mpp": round(info.level_mpp(level), 6),
            }
            for level, (width, height) in enumerate(info.level_dimensions)
        ],
        "mpp": [round(info.mpp[0], 6), round(info.mpp[1], 6)],
        "mpp_source": info.mpp_source,
        "objective_power": info.objective_power,
        "tissue_fraction": round(tissue_fraction, 4),
        "tiles": tiles,
        "thumbnail": None,
    }


def _human(report: dict[str, Any]) -> str:
    tiles = report["tiles"]
    lines = [
        f"slide        {report['slide']}",
        f"format       {report['format']}" + (f" ({report['vendor']})" if report["vendor"] else ""),
        f"dimensions   {report['width']} x {report['height']} px, {len(report['levels'])} level(s)",
    ]
    for level in report["levels"]:
        lines.append(
            f"  level {level['index']}    {level['width']} x {level['height']}  "
            f"downsample {level['downsample']:.4f}  {level['mpp']:.4f} um/px"
        )
    mpp_x, mpp_y = report["mpp"]
    lines.append(f"mpp          {mpp_x} x {mpp_y} um/px (source: {report['mpp_source']})")
    power = report["objective_power"]
    lines.append(f"objective    {f'{power:g}x' if power else 'unknown'}")
    lines.append(f"tissue       {100 * report['tissue_fraction']:.1f} % of the slide")
    resampling = (
        "no resampling" if tiles["read_px"] == tiles["tile_px"] else f"resized to {tiles['tile_px']} px"
    )
    lines.append(
        f"tiles        {tiles['kept']} kept of {tiles['total']} at {tiles['target_mpp']} um/px "
        f"({tiles['candidates']} passed the tissue mask)"
    )
    lines.append(
        f"             read {tiles['read_px']} px at level {tiles['read_level']} "
        f"({tiles['level_mpp']:.4f} um/px, {resampling})"
    )
    if report["thumbnail"]:
        lines.append(f"thumbnail    {report['thumbnail']}")
    return "\n".join(lines)


def run_inspect(
    slide_path: Path, mpp: float | None, thumbnail: Path | None, settings: Settings
) -> dict[str, Any]:
    """Open, mask and tile one slide; write the thumbnail if asked. Returns the report dictionary."""
    # Imported here, not at module level, so `sequoia-clinic --help` starts fast.
    from PIL import Image

    from sequoia_clinic.slides import (
        build_tile_grid,
        compute_tissue_mask,
        open_slide,
        render_overlay,
        select_tiles,
    )

    picture_format = _thumbnail_format(thumbnail)
    with open_slide(slide_path, mpp=mpp) as slide:
        mask = compute_tissue_mask(slide, settings.tissue)
        candidates = build_tile_grid(slide, mask, settings.tiles)
        grid = select_tiles(slide, candidates, settings.tiles)
        report = slide_report(slide, candidates, grid, mask.tissue_fraction)
        if thumbnail is not None and picture_format is not None:
            picture = render_overlay(slide, mask, grid, max_size=THUMBNAIL_SIZE)
            with atomic_path(thumbnail) as tmp:
                Image.fromarray(picture).save(tmp, format=picture_format)
            report["thumbnail"] = str(thumbnail)
    return report


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    @user_errors
    def inspect(
        slide: Path = typer.Argument(
            ..., help="An .svs/.tif file, a DICOM WSI folder, or one .dcm of a series."
        ),
        mpp: float | None = typer.Option(
            None, "--mpp", help="Pixel size at full resolution in um/px; overrides the file (0.25 = 40x)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
        thumbnail: Path | None = typer.Option(
            None,
            "--thumbnail",
            help="Write a picture with the tissue mask and the kept tiles (e.g. out.png).",
        ),
    ) -> None:
        """Describe a slide: format, levels, pixel size and its source, tissue and 20x tile counts."""
        report = run_inspect(slide, mpp, thumbnail, Settings())
        typer.echo(json.dumps(report, sort_keys=False) if as_json else _human(report))
