"""The tile reader: batches of ``tile_px x tile_px`` RGB tiles, fast and with bounded memory.

Why not one ``read_region`` per tile: tiffslide decodes every stored tile a request touches and forgets it,
so neighbouring 256 px tiles on a 240 px storage grid decode most stored tiles two to four times, and the
zarr layer holds the GIL. Instead we decode each stored ("native") tile once, in a small thread pool
(imagecodecs releases the GIL), keep decoded tiles in a byte-bounded LRU cache so that the next tile of a
row and the next row reuse them, and cut the output tiles out with numpy. No library offers this cut-and-
cache step for arbitrary tile lattices, hence the hand-written cache.

Memory is bounded by the cache budget (``TileSettings.tile_cache_mb``) plus one batch, whatever the slide
size. Tiles come out in the order of the requested indices. When the read level is not at the target
resolution the read squares are shrunk with area (box) interpolation: Pillow's ``reduce`` for integer
factors, ``resize(BOX)`` otherwise.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sequoia_clinic.settings import TileSettings
from sequoia_clinic.slides.base import Slide, assemble_region
from sequoia_clinic.slides.grid import TileGrid


@dataclass(frozen=True, eq=False)
class TileBatch:
    """One batch of tiles: ``pixels[k]`` is tile ``indices[k]`` of the grid."""

    indices: np.ndarray  # (n,) int64 indices into grid.coords
    pixels: np.ndarray  # (n, tile_px, tile_px, 3) uint8


class NativeTileCache:
    """Decoded native tiles of one pyramid level, least recently used first out, within a byte budget."""

    def __init__(self, slide: Slide, level: int, max_bytes: int, executor: ThreadPoolExecutor | None) -> None:
        self.slide = slide
        self.level = level
        self.tile_size = slide.native_tile_size(level)
        self.level_size = slide.info.level_dimensions[level]
        self.max_bytes = max_bytes
        self._tiles: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._executor = executor
        self.decoded = 0  # number of native tiles decoded (for benchmarks and tests)

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def keys_for(self, x: int, y: int, width: int, height: int) -> list[tuple[int, int]]:
        """Native tiles (column, row) overlapping a level rectangle, clipped to the level."""
        tile_w, tile_h = self.tile_size
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, self.level_size[0]), min(y + height, self.level_size[1])
        if x1 <= x0 or y1 <= y0:
            return []
        return [
            (col, row)
            for row in range(y0 // tile_h, -(-y1 // tile_h))
            for col in range(x0 // tile_w, -(-x1 // tile_w))
        ]

    def fetch(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
        """Decoded tiles for ``keys`` (decoding the missing ones in parallel); held until the caller drops them."""
        found = {key: self._tiles[key] for key in keys if key in self._tiles}
        for key in found:
            self._tiles.move_to_end(key)
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        if missing:
            read = lambda key: self.slide.read_native_tile(self.level, key[0], key[1])  # noqa: E731
            decoded = (
                list(self._executor.map(read, missing)) if self._executor else [read(k) for k in missing]
            )
            self.decoded += len(missing)
            for key, tile in zip(missing, decoded, strict=True):
                found[key] = tile
                self._store(key, tile)
        return found

    def _store(self, key: tuple[int, int], tile: np.ndarray) -> None:
        self._tiles[key] = tile
        self._bytes += tile.nbytes
        while self._bytes > self.max_bytes and self._tiles:
            _, old = self._tiles.popitem(last=False)
            self._bytes -= old.nbytes


def _shrink(square: np.ndarray, tile_px: int) -> np.ndarray:
    """Area-interpolated resize of a read square to ``tile_px``."""
    size = square.shape[0]
    if size == tile_px:
        return square
    image = Image.fromarray(square)
    if size % tile_px == 0:
        return np.asarray(image.reduce(size // tile_px))
    return np.asarray(image.resize((tile_px, tile_px), Image.Resampling.BOX))


def _read_batch(cache: NativeTileCache, corners: np.ndarray, read_px: int, tile_px: int) -> np.ndarray:
    keys: list[tuple[int, int]] = []
    for x, y in corners:
        keys.extend(cache.keys_for(int(x), int(y), read_px, read_px))
    tiles = cache.fetch(keys)
    out = np.empty((len(corners), tile_px, tile_px, 3), dtype=np.uint8)
    for k, (x, y) in enumerate(corners):
        square = assemble_region(
            cache.level_size,
            cache.tile_size,
            lambda col, row: tiles[(col, row)],
            (int(x), int(y)),
            (read_px, read_px),
        )
        out[k] = _shrink(square, tile_px)
    return out


def iter_tile_batches(
    slide: Slide, grid: TileGrid, indices: np.ndarray, settings: TileSettings
) -> Iterator[TileBatch]:
    """Yield the tiles ``grid.coords[indices]`` in that order, ``settings.batch_size`` at a time."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= grid.n_tiles):
        raise IndexError(f"tile indices must lie in 0..{grid.n_tiles - 1}")
    corners = grid.level_coords()
    threads = max(1, settings.read_threads)
    with ThreadPoolExecutor(max_workers=threads) if threads > 1 else contextlib.nullcontext() as executor:
        cache = NativeTileCache(slide, grid.level, settings.tile_cache_mb << 20, executor)
        for start in range(0, indices.size, max(1, settings.batch_size)):
            chunk = indices[start : start + settings.batch_size]
            yield TileBatch(chunk, _read_batch(cache, corners[chunk], grid.read_px, grid.tile_px))
