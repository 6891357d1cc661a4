"""A picture for people: the slide thumbnail with the tissue mask tinted and chosen tiles outlined.

Used by ``sequoia-clinic inspect --thumbnail`` (the PDF report draws its own outlines).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from sequoia_clinic.slides.base import Slide
from sequoia_clinic.slides.grid import TileGrid
from sequoia_clinic.slides.tissue import TissueMask

TISSUE_TINT = (0, 170, 90)  # green wash over detected tissue
TILE_OUTLINE = (20, 60, 220)  # blue tile borders
TINT_ALPHA = 0.3


def render_overlay(
    slide: Slide,
    mask: TissueMask,
    grid: TileGrid,
    indices: np.ndarray | None = None,
    max_size: int = 1024,
) -> np.ndarray:
    """RGB uint8 thumbnail (longest side <= ``max_size``) with tissue tinted and tiles outlined.

    ``indices`` selects the tiles to outline (default: the grid's kept tiles).
    """
    thumb = slide.thumbnail(max_size)
    height, width = thumb.shape[:2]
    level0_w, level0_h = slide.info.dimensions
    scale_x, scale_y = width / level0_w, height / level0_h

    # mask pixel (r, c) covers level-0 [c*ds, (c+1)*ds); place it on the thumbnail by nearest neighbour
    columns = np.minimum((np.arange(width) + 0.5) / scale_x / mask.downsample, mask.shape[1] - 1)
    rows = np.minimum((np.arange(height) + 0.5) / scale_y / mask.downsample, mask.shape[0] - 1)
    tissue = mask.mask[rows.astype(int)[:, None], columns.astype(int)[None, :]]  # unpacked once
    tinted = thumb.astype(np.float32)
    tinted[tissue] = (1 - TINT_ALPHA) * tinted[tissue] + TINT_ALPHA * np.array(TISSUE_TINT, np.float32)
    image = Image.fromarray(np.clip(tinted + 0.5, 0, 255).astype(np.uint8))

    chosen = grid.kept_indices if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    draw = ImageDraw.Draw(image)
    size = grid.tile_size_level0
    for x, y in grid.coords[chosen]:
        box = (x * scale_x, y * scale_y, (x + size) * scale_x - 1, (y + size) * scale_y - 1)
        draw.rectangle(box, outline=TILE_OUTLINE, width=1)
    return np.asarray(image)
