"""The tile reader: batches of ``tile_px x tile_px`` RGB tiles, fast and with bounded memory.

Why not one ``read_region`` per tile: tiffslide decodes every stored tile a request touches and forgets it,
so neighbouring 256 px tiles on a 240 px storage grid decode most stored tiles two to four times, and the
zarr layer holds the GIL. Instead we decode each stored ("native") tile once, in a small thread pool
(imagecodecs releases the GIL), keep decoded tiles in a byte-bounded LRU cache so that the next tile of a
row and the next row reuse them, and cut the output tiles out with numpy. No library offers this cut-and-
cache step for arbitrary tile lattices, hence the hand-written cache.

:meth:`TileReader.read_batches` reads a sequence of batches as a two-stage pipeline: while the caller
works on one batch (the tile selection checks its pixels), the stored tiles of the next are being decoded
in the pool. The cache itself is only touched by the caller's thread; pool threads only decode.

Memory is bounded by the cache budget (``TileSettings.tile_cache_mb``; nothing is kept when stored tiles
match the read squares one to one) plus two batches, whatever the slide size. Readers that know what they
will read announce it (:meth:`TileReader.plan`): a stored tile with no announced use left is dropped first
once the cache holds ``SPENT_TILE_BYTES``, so a grid-order pass keeps a couple of rows, not the budget. Tiles come out in the order
of the requested indices. When the read level is not at the target resolution the read squares are shrunk
with area (box) interpolation: Pillow's ``reduce`` for integer factors, ``resize(BOX)`` otherwise.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sequoia_clinic.settings import TileSettings
from sequoia_clinic.slides.base import Slide, assemble_region
from sequoia_clinic.slides.grid import TileGrid

Key = tuple[int, int]  # (column, row) of a stored tile
# Spent stored tiles (no announced use left) are dropped first once the cache holds this much: about two rows
# of 240 px stored tiles across a 60,000 px wide level, what a grid-order read needs at once.
SPENT_TILE_BYTES = 32 << 20


@dataclass(frozen=True, eq=False)
class TileBatch:
    """One batch of tiles: ``pixels[k]`` is tile ``indices[k]`` of the grid."""

    indices: np.ndarray  # (n,) int64 indices into grid.coords
    pixels: np.ndarray  # (n, tile_px, tile_px, 3) uint8


class NativeTileCache:
    """Decoded native tiles of one pyramid level, least recently used first out, within a byte budget.

    :meth:`request` starts decoding the missing tiles (in the executor, one task per thread) and returns a
    function that waits for them and gives every requested tile; tiles being decoded are shared by later
    requests, so a stored tile is decoded once while it stays in the cache. Use from one thread.
    """

    def __init__(
        self,
        slide: Slide,
        level: int,
        max_bytes: int,
        executor: ThreadPoolExecutor | None,
        threads: int = 2,
        spent_bytes: int = SPENT_TILE_BYTES,
    ) -> None:
        self.slide = slide
        self.level = level
        self.tile_size = slide.native_tile_size(level)
        self.level_size = slide.info.level_dimensions[level]
        self.max_bytes = max_bytes
        self._tiles: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._decoding: dict[Key, tuple[Future[list[np.ndarray]], int]] = {}
        self._bytes = 0
        self._executor = executor
        self._threads = max(1, threads)  # the executor's workers: missing tiles are split in this many groups
        self.decoded = 0  # number of native tiles decoded (for benchmarks and tests)
        self.spent_bytes = min(spent_bytes, max_bytes)
        self._columns = -(-self.level_size[0] // self.tile_size[0])
        # Planned uses not yet requested, per stored tile (index row * columns + column; see :meth:`plan`):
        # an array, not a dict, because a whole slide's plan has one entry per stored tile (~100,000).
        self._uses_left: np.ndarray | None = None
        self._spent: dict[Key, None] = {}  # cached tiles whose planned uses are all past, oldest first

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def keys_for(self, x: int, y: int, width: int, height: int) -> list[Key]:
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

    def plan(self, keys: Iterable[Key]) -> None:
        """Announce upcoming requests: each occurrence of a key in ``keys`` is one future use of that tile.

        A cached tile whose announced uses have all been requested is *spent*: once the cache holds more
        than ``spent_bytes``, spent tiles go first, so a grid-order read keeps about two rows of stored
        tiles instead of filling the whole budget. (An unannounced later request of a spent tile that was
        dropped decodes it again; the tile selection announces each round when it starts.)
        """
        if self._uses_left is None:
            rows = -(-self.level_size[1] // self.tile_size[1])
            self._uses_left = np.zeros(self._columns * rows, dtype=np.int32)
        index = np.fromiter((row * self._columns + col for col, row in keys), dtype=np.int64)
        np.add.at(self._uses_left, index, 1)
        for key in [k for k in self._spent if self._uses_left[self._index(k)] > 0]:
            del self._spent[key]

    def _index(self, key: Key) -> int:
        column, row = key
        return row * self._columns + column

    def request(self, keys: Iterable[Key]) -> Callable[[], dict[Key, np.ndarray]]:
        """Start decoding the tiles of ``keys`` not cached or being decoded; returns the function giving them."""
        occurrences = list(keys)
        uses = self._uses_left
        if uses is not None:
            for key in occurrences:  # one planned use each (see :meth:`plan`)
                index = self._index(key)
                if uses[index] > 0:
                    uses[index] -= 1
                    if uses[index] == 0 and key in self._tiles:
                        self._spent[key] = None
        wanted = list(dict.fromkeys(occurrences))
        found = {key: self._tiles[key] for key in wanted if key in self._tiles}  # held: safe from eviction
        for key in found:
            self._tiles.move_to_end(key)
        missing = [key for key in wanted if key not in found and key not in self._decoding]
        groups = [missing[start :: self._threads] for start in range(self._threads)]
        for group in (g for g in groups if g):  # one task per thread, not one per tile
            future: Future[list[np.ndarray]]
            if self._executor is not None:
                future = self._executor.submit(self._decode, group)
            else:
                future = Future()
                future.set_result(self._decode(group))
            for position, key in enumerate(group):
                self._decoding[key] = (future, position)
        self.decoded += len(missing)

        def collect() -> dict[Key, np.ndarray]:
            for key in wanted:
                if key in found:
                    continue
                if key in self._decoding:
                    future, position = self._decoding.pop(key)
                    found[key] = future.result()[position]
                    self._store(key, found[key])
                elif key in self._tiles:  # collected by an earlier request meanwhile
                    found[key] = self._tiles[key]
                else:  # decoded for an earlier request and already evicted (a tiny budget)
                    found[key] = self._decode([key])[0]
                    self.decoded += 1
            return found

        return collect

    def fetch(self, keys: list[Key]) -> dict[Key, np.ndarray]:
        """Decoded tiles for ``keys`` (decoding the missing ones in parallel); held until the caller drops them."""
        return self.request(keys)()

    def _decode(self, keys: list[Key]) -> list[np.ndarray]:
        return [self.slide.read_native_tile(self.level, column, row) for column, row in keys]

    def _store(self, key: Key, tile: np.ndarray) -> None:
        self._tiles[key] = tile
        self._bytes += tile.nbytes
        if self._uses_left is not None and self._uses_left[self._index(key)] == 0:
            self._spent[key] = None
        while self._bytes > self.spent_bytes and self._spent:  # spent tiles first (see :meth:`plan`)
            self._drop(next(iter(self._spent)))
        while self._bytes > self.max_bytes and self._tiles:
            self._drop(next(iter(self._tiles)))

    def _drop(self, key: Key) -> None:
        self._spent.pop(key, None)
        old = self._tiles.pop(key, None)
        if old is not None:
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


def _cut_into(out: np.ndarray, tiles: dict[Key, np.ndarray], cache: NativeTileCache, x: int, y: int) -> None:
    """Copy the square of ``out``'s size at level pixel (x, y) out of decoded stored tiles into ``out``.

    The same cut as :func:`~sequoia_clinic.slides.base.assemble_region` (outside the level is white), written
    straight into the batch array instead of through a temporary square.
    """
    height, width = out.shape[:2]
    tile_w, tile_h = cache.tile_size
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, cache.level_size[0]), min(y + height, cache.level_size[1])
    covered = 0
    for row in range(y0 // tile_h, -(-y1 // tile_h)) if y1 > y0 else ():
        for col in range(x0 // tile_w, -(-x1 // tile_w)) if x1 > x0 else ():
            tile = tiles[(col, row)]
            tx, ty = col * tile_w, row * tile_h
            ix0, iy0 = max(x0, tx), max(y0, ty)
            ix1, iy1 = min(x1, tx + tile.shape[1]), min(y1, ty + tile.shape[0])
            if ix1 > ix0 and iy1 > iy0:
                out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = tile[iy0 - ty : iy1 - ty, ix0 - tx : ix1 - tx]
                covered += (ix1 - ix0) * (iy1 - iy0)
    if covered != width * height:  # part of the square lies outside the level (or its stored tiles)
        fetch = lambda col, row: tiles[(col, row)]  # noqa: E731
        out[:] = assemble_region(cache.level_size, cache.tile_size, fetch, (x, y), (width, height))


class TileReader:
    """Reads tiles of one grid through one decoded-tile cache and one pool of decode threads.

    Use as a context manager (the threads stop on exit). :meth:`read` and :meth:`read_batches` may be
    called many times, e.g. by a selection that checks tiles in rounds: tiles decoded for one call stay
    cached for the next. Call them from one thread.
    """

    def __init__(self, slide: Slide, grid: TileGrid, settings: TileSettings) -> None:
        threads = max(1, settings.read_threads)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tile-decode")
        # Stored tiles exactly the size of the read squares (the lattice starts at 0) each belong to one
        # tile: nothing to share, so none is kept (less memory, and freed buffers are reused).
        aligned = slide.native_tile_size(grid.level) == (grid.read_px, grid.read_px)
        budget = 0 if aligned else settings.tile_cache_mb << 20
        self.cache = NativeTileCache(slide, grid.level, budget, self._executor, threads)
        self.grid = grid  # corners are found per request: a whole-slide array grew with the slide

    def _check(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.grid.n_tiles):
            raise IndexError(f"tile indices must lie in 0..{self.grid.n_tiles - 1}")
        return indices

    def _keys(self, indices: np.ndarray) -> Iterator[Key]:
        read_px = self.grid.read_px
        for x, y in self.grid.level_coords(indices):
            yield from self.cache.keys_for(int(x), int(y), read_px, read_px)

    def plan(self, indices: np.ndarray) -> None:
        """Announce that the tiles ``indices`` will be read (see :meth:`NativeTileCache.plan`)."""
        self.cache.plan(self._keys(self._check(indices)))

    def _request(self, indices: np.ndarray) -> Callable[[], dict[Key, np.ndarray]]:
        return self.cache.request(self._keys(indices))

    def _cut(
        self, indices: np.ndarray, tiles: dict[Key, np.ndarray], out: np.ndarray | None = None
    ) -> np.ndarray:
        read_px, tile_px = self.grid.read_px, self.grid.tile_px
        if out is None:
            out = np.empty((len(indices), tile_px, tile_px, 3), dtype=np.uint8)
        square = np.empty((read_px, read_px, 3), dtype=np.uint8)
        for k, (x, y) in enumerate(self.grid.level_coords(indices)):
            if read_px == tile_px:
                _cut_into(out[k], tiles, self.cache, int(x), int(y))
            else:
                _cut_into(square, tiles, self.cache, int(x), int(y))
                out[k] = _shrink(square, tile_px)
        return out

    def read(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), tile_px, tile_px, 3) uint8: the tiles ``grid.coords[indices]`` in that order."""
        indices = self._check(indices)
        return self._cut(indices, self._request(indices)())

    def read_batches(
        self, batches: Iterable[np.ndarray | tuple[np.ndarray, np.ndarray]], prefetch: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, pixels) for each batch, in order; the next batch is decoded while the caller uses this one.

        A batch is an array of grid indices, or (indices, out) to have its pixels cut into ``out`` (rows of a
        buffer of the caller's). ``batches`` is read one ahead of what was yielded, and lazily. With
        ``prefetch=False`` each batch is decoded only when asked for (the caller computes on every core).
        """
        if not prefetch:
            for batch in batches:
                indices, out = batch if isinstance(batch, tuple) else (batch, None)
                indices = self._check(indices)
                yield indices, self._cut(indices, self._request(indices)(), out)
            return
        pending: tuple[np.ndarray, Callable[[], dict[Key, np.ndarray]], np.ndarray | None] | None = None
        for batch in batches:
            indices, out = batch if isinstance(batch, tuple) else (batch, None)
            indices = self._check(indices)
            upcoming = (indices, self._request(indices), out)
            if pending is not None:
                yield pending[0], self._cut(pending[0], pending[1](), pending[2])
            pending = upcoming
        if pending is not None:
            yield pending[0], self._cut(pending[0], pending[1](), pending[2])

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> TileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_tile_batches(
    slide: Slide, grid: TileGrid, indices: np.ndarray, settings: TileSettings, prefetch: bool = True
) -> Iterator[TileBatch]:
    """Yield the tiles ``grid.coords[indices]`` in that order, ``settings.batch_size`` at a time.

    ``prefetch``: decode the next batch while the caller uses this one (see :meth:`TileReader.read_batches`).
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= grid.n_tiles):
        raise IndexError(f"tile indices must lie in 0..{grid.n_tiles - 1}")
    size = max(1, settings.batch_size)
    with TileReader(slide, grid, settings) as reader:
        reader.plan(indices)
        chunks = (indices[start : start + size] for start in range(0, indices.size, size))
        for chunk, pixels in reader.read_batches(chunks, prefetch):
            yield TileBatch(chunk, pixels)
