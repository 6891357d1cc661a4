"""Which candidate tiles feed the encoder, and in which order: the tile-order rules (``TileOrder``).

Both rules have the same shape, which is what lets tile selection stop at the cap: the candidate tiles (the
tissue-mask candidates) get a fixed *check order* before any pixel is read, and the used tiles are the first
``max_tiles`` of that order that pass the pixel check (all of them when fewer pass). The slide reader then
checks candidates in that order and stops as soon as ``max_tiles`` passed (``slides/tiling.py``), which
gives exactly the tiles of :func:`first_passing` ("check every candidate, then sample").

* ``grid`` (the default of bundles that do not say otherwise): the check order is a shuffle of the
  candidates with Python's ``random.Random(sample_seed)``; the used tiles go to k-means in grid (row-major)
  order. With at most ``max_tiles`` kept tiles this is every kept tile in grid order, as before; above the
  cap it replaces the former ``random.sample(kept, max_tiles)``, which needs every candidate checked first.
* ``reference`` (the SEQUOIA preprocessing, ``patch_gen_hdf5.py`` then ``compute_features_hdf5.py``): the
  read level's lattice, *including* the partial positions at its right and bottom edges, enumerated column by
  column (x outer, y inner), shuffled by numpy's legacy generator seeded 5; the candidates in that order are
  checked and the first ``max_tiles`` that pass are kept. The feature step reads them in the HDF5 file's key
  order, the byte order of the ``"<x>_<y>"`` level-0 keys (``"1024_256"`` before ``"256_0"``), and k-means
  sees them in that order. Its ``random.sample(keys, 4000)`` (seed 99) changes nothing after the cap, so the
  sample seed plays no part here.

Functions here work on plain arrays (grid indices, coordinates, lattice sizes) so that they do not depend on
the slide stage.
"""

from __future__ import annotations

import random

import numpy as np

from sequoia_clinic.settings import TileOrder

REFERENCE_SHUFFLE_SEED = 5  # np.random.seed(5) in the reference's patch_gen_hdf5.py


def resolve_tile_order(override: TileOrder | None, bundle_order: TileOrder) -> TileOrder:
    """The tile order of a run: an explicit setting (``--tile-order``) wins over the bundle's."""
    return TileOrder(bundle_order if override is None else override)


def reference_lattice_shape(level_size: tuple[int, int], read_px: int) -> tuple[int, int]:
    """(rows, columns) of the reference's tile lattice: ``range(0, size, step)`` per axis, partial tiles included."""
    width, height = level_size
    return -(-height // read_px), -(-width // read_px)


def check_order(
    order: TileOrder,
    candidates: np.ndarray,
    grid_shape: tuple[int, int],
    reference_shape: tuple[int, int],
    seed: int,
) -> np.ndarray:
    """The candidate grid indices in the order their pixels are checked (see the module docstring).

    ``grid_shape`` is the (rows, columns) lattice of whole tiles whose row-major index the candidates are;
    ``reference_shape`` the reference's lattice (:func:`reference_lattice_shape`), used by ``reference`` only.
    """
    candidates = np.asarray(candidates, dtype=np.int64).reshape(-1)
    if TileOrder(order) is TileOrder.GRID:
        shuffled = candidates.tolist()
        random.Random(seed).shuffle(shuffled)
        return np.asarray(shuffled, dtype=np.int64)
    rows, columns = grid_shape
    ref_rows, ref_columns = reference_shape
    if ref_rows < rows or ref_columns < columns:
        raise ValueError(f"the reference lattice {reference_shape} is smaller than the grid {grid_shape}")
    positions = np.arange(ref_rows * ref_columns, dtype=np.int64)  # column-major: x outer, y inner
    np.random.RandomState(REFERENCE_SHUFFLE_SEED).shuffle(positions)
    column, row = np.divmod(positions, ref_rows)
    whole = (column < columns) & (row < rows)  # the partial edge positions are never whole tiles
    index = row[whole] * columns + column[whole]
    is_candidate = np.zeros(rows * columns, dtype=bool)
    is_candidate[candidates] = True
    return index[is_candidate[index]]


def kmeans_order(order: TileOrder, used: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``used`` (grid indices) in the order k-means sees them: grid order, or the reference's key order.

    ``coords`` is the grid's (N, 2) level-0 (x, y) array; the reference sorts the ``"<x>_<y>"`` key strings
    byte by byte (ASCII digits and ``_``, so ``str`` order is byte order).
    """
    used = np.asarray(used, dtype=np.int64).reshape(-1)
    if TileOrder(order) is TileOrder.GRID:
        return np.sort(used)
    keys = [f"{int(coords[i, 0])}_{int(coords[i, 1])}" for i in used]
    return used[np.argsort(np.asarray(keys, dtype=str), kind="stable")]


def first_passing(order: np.ndarray, passed: np.ndarray, max_tiles: int) -> np.ndarray:
    """The first ``max_tiles`` indices of ``order`` whose ``passed`` flag is set ("check all, then sample").

    ``passed`` is a boolean array over grid indices. This is the rule the early-stopping selection
    reproduces; it needs every flag, so the pipeline uses it only in tests and benchmarks.
    """
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    order = np.asarray(order, dtype=np.int64).reshape(-1)
    return order[np.asarray(passed, dtype=bool)[order]][:max_tiles]
