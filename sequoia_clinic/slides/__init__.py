"""Slide ingestion: open SVS/TIFF and DICOM WSI slides, find tissue, lay out 20x tiles and read them fast.

with open_slide(path, mpp=None) as slide:
    mask = compute_tissue_mask(slide, settings.tissue)
    grid = select_tiles(slide, build_tile_grid(slide, mask, settings.tiles), settings.tiles)
    for batch in iter_tile_batches(slide, grid, grid.kept_indices, settings.tiles):
        ...  # batch.pixels: (n, 256, 256, 3) uint8
"""

from sequoia_clinic.slides.base import Slide, SlideInfo, SlideMetadata
from sequoia_clinic.slides.grid import TileGrid
from sequoia_clinic.slides.opening import open_slide, opened_slide_sha256, slide_files, slide_sha256
from sequoia_clinic.slides.overlay import render_overlay
from sequoia_clinic.slides.tile_reader import TileBatch, iter_tile_batches
from sequoia_clinic.slides.tiling import TileSelection, build_tile_grid, choose_read_level, select_tiles
from sequoia_clinic.slides.tissue import TissueMask, compute_tissue_mask

__all__ = [
    "Slide",
    "SlideInfo",
    "SlideMetadata",
    "TileBatch",
    "TileGrid",
    "TileSelection",
    "TissueMask",
    "build_tile_grid",
    "choose_read_level",
    "compute_tissue_mask",
    "iter_tile_batches",
    "open_slide",
    "render_overlay",
    "select_tiles",
    "slide_files",
    "opened_slide_sha256",
    "slide_sha256",
]
