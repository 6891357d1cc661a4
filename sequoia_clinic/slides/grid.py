"""The tile grid record: where each tile of a slide lies at the target resolution and whether it is kept.

:mod:`sequoia_clinic.slides.tiling` builds it and applies the keep decision; the tile reader
(:mod:`sequoia_clinic.slides.tile_reader`) and the overlay only read it. After a selection that stopped at
the tile cap, ``keep`` marks the checked tiles that passed and the candidates never checked; ``checked``
says which were checked (so ``keep & checked`` are the tiles known to pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class TileGrid:
    """Tiles of one slide at the target resolution. Row ``i`` of every array describes tile ``i``."""

    coords: np.ndarray  # (N, 2) int64 level-0 top-left (x, y), row-major order
    tile_size_level0: float  # level-0 pixels spanned by one tile (read_px * level downsample)
    level: int  # pyramid level the tiles are read from
    read_px: int  # pixels read at that level per tile side (== tile_px when no resampling)
    tile_px: int  # pixels per side of the delivered tiles
    tissue_fraction: np.ndarray  # (N,) float, tissue-mask share under each tile
    keep: np.ndarray  # (N,) bool: mask candidates; after select_tiles, those not rejected by the pixel check
    grid_shape: tuple[int, int]  # (rows, columns) of the lattice; coords[i] is row i // cols, col i % cols
    target_mpp: float
    level_mpp: float  # um/px of the read level
    level_downsample: float
    mpp: tuple[float, float]  # slide mpp at level 0
    mpp_source: str
    mask_threshold: float  # the saturation threshold of the tissue mask (used by the pixel check)
    level_size: tuple[int, int]  # (width, height) of the read level, in its pixels
    pixel_checked: bool = False  # True once select_tiles has applied the blank / low-contrast check
    checked: np.ndarray | None = None  # (N,) bool: tiles whose pixels were checked (None: not recorded)

    @property
    def n_tiles(self) -> int:
        return int(self.coords.shape[0])

    @property
    def kept_indices(self) -> np.ndarray:
        return np.flatnonzero(self.keep).astype(np.int64)

    @property
    def resampled(self) -> bool:
        return self.read_px != self.tile_px

    def level_coords(self, indices: np.ndarray | None = None) -> np.ndarray:
        """(N, 2) top-left corners in the pixels of the read level (of the tiles ``indices``, or of all)."""
        coords = self.coords if indices is None else self.coords[indices]
        return np.floor(coords / self.level_downsample).astype(np.int64)

    def summary(self) -> dict[str, object]:
        """Small JSON-ready audit record (no per-tile arrays)."""
        return {
            "target_mpp": self.target_mpp,
            "tile_px": self.tile_px,
            "read_level": self.level,
            "read_px": self.read_px,
            "level_mpp": round(self.level_mpp, 6),
            "level_downsample": round(self.level_downsample, 6),
            "tile_size_level0": round(self.tile_size_level0, 4),
            "grid_rows": self.grid_shape[0],
            "grid_columns": self.grid_shape[1],
            "total": self.n_tiles,
            "kept": int(self.keep.sum()),
            "pixel_checked": self.pixel_checked,
        }
