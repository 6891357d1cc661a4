"""Slide ingestion: open SVS/TIFF and DICOM WSI slides, find tissue, lay out 20x tiles and read them fast.

with open_slide(path, mpp=None) as slide:
    mask = compute_tissue_mask(slide, settings.tissue)
    grid = select_tiles(slide, build_tile_grid(slide, mask, settings.tiles), settings.tiles)
    for batch in iter_tile_batches(slide, grid, grid.kept_indices, settings.tiles):
        ...  # batch.pixels: (n, 256, 256, 3) uint8

Import what you need from its module (``base``, ``grid``, ``opening``, ``overlay``, ``tile_reader``,
``tiling``, ``tissue``): this package imports nothing itself, so that a light command never pays for a heavy
stage (torch, timm, lifelines, matplotlib ... are imported only by the modules that use them).
"""
