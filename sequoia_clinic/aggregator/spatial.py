"""Spatial mode: per-tile expression estimates from sliding windows of tiles (SEQUOIA ``visualize.py``).

What the map shows: for each tile, the bulk model's prediction for the *neighbourhood* of at most
``window x window`` tiles around it (10 x 10 tiles of 256 px at 0.5 µm/px = 1.28 mm square), not a
measurement of the tile itself. No k-means here: the tile features of a window are the tokens directly,
ordered by grid column then row, and zero-padded to the model's 100 token rows. A window is evaluated only
when more than ``min_fill`` of its positions hold a tile (SEQUOIA: more than half, the default; lower it
when only a sample of the tissue tiles was embedded, or most windows are skipped). With
``stride == window`` (default) windows do not overlap and every tile takes its own window's value (a blocky
map); with a smaller stride each tile gets the mean over all evaluated windows that cover it (smoother,
window²/stride² times more model calls). The fold ensemble's mean is used. Tiles covered by no evaluated
window are NaN. The zero-padding convention and the map itself were validated by the authors only against
spatial transcriptomics on a few slides; with an untrained (demo) bundle the map is noise.

Difference from the reference: its window loop ``range(0, max_x, stride)`` skips the last grid column/row
when it falls on a multiple of the stride; here windows run up to and including the last column/row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sequoia_clinic.aggregator.ensemble import FoldEnsemble


def grid_positions(tile_coords: np.ndarray, tile_size_level0: float) -> np.ndarray:
    """Integer (column, row) grid positions of level-0 tile corners, starting at (0, 0)."""
    coords = np.asarray(tile_coords, dtype=np.float64)
    return np.rint((coords - coords.min(axis=0)) / float(tile_size_level0)).astype(np.int64)


def window_members(grid: np.ndarray, window: int, stride: int, min_fill: float = 0.5) -> list[np.ndarray]:
    """Tile indices of every window with more than ``min_fill * window²`` tiles, ordered by (column, row)."""
    where = {(int(x), int(y)): i for i, (x, y) in enumerate(grid)}
    max_x, max_y = (int(v) for v in grid.max(axis=0))
    windows = []
    for x0 in range(0, max_x + 1, stride):
        for y0 in range(0, max_y + 1, stride):
            members = [
                where[(x, y)]
                for x in range(x0, x0 + window)
                for y in range(y0, y0 + window)
                if (x, y) in where
            ]
            if members and len(members) > min_fill * window * window:
                windows.append(np.asarray(members, dtype=np.int64))
    return windows


def spatial_expression(
    tile_features: np.ndarray,
    tile_coords: np.ndarray,
    tile_size_level0: float,
    ensemble: FoldEnsemble,
    gene_indices: Sequence[int],
    window: int = 10,
    stride: int = 10,
    batch_size: int = 32,
    min_fill: float = 0.5,
) -> np.ndarray:
    """Per-tile estimates (n_tiles, len(gene_indices)) of ``ensemble`` (on its own device); NaN where no
    evaluated window covers a tile.

    ``min_fill`` in [0, 1): a window is evaluated when more than this fraction of its ``window²`` positions
    hold a tile (0.5 = SEQUOIA; 0 = every window holding at least one tile).
    """
    features = np.asarray(tile_features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(tile_coords):
        raise ValueError("tile_features must be (n, D) with one row per tile coordinate")
    if window < 1 or stride < 1:
        raise ValueError("window and stride must be >= 1")
    if not 0.0 <= min_fill < 1.0:
        raise ValueError(f"min_fill must lie in [0, 1), got {min_fill}")
    n_tokens = ensemble.num_clusters
    if window * window > n_tokens:
        raise ValueError(f"a {window}x{window} window has more tiles than the model's {n_tokens} token rows")
    genes = np.asarray(gene_indices, dtype=np.int64)
    total = np.zeros((len(features), len(genes)), dtype=np.float64)
    count = np.zeros(len(features), dtype=np.int64)
    windows = window_members(grid_positions(tile_coords, tile_size_level0), window, stride, min_fill)
    for lo in range(0, len(windows), batch_size):
        chunk = windows[lo : lo + batch_size]
        tokens = np.zeros((len(chunk), n_tokens, features.shape[1]), dtype=np.float32)
        for b, members in enumerate(chunk):
            tokens[b, : len(members)] = features[members]
        _, mean = ensemble.predict(tokens)
        for b, members in enumerate(chunk):
            total[members] += mean[b, genes]
            count[members] += 1
    out = np.full(total.shape, np.nan)
    covered = count > 0
    out[covered] = total[covered] / count[covered, None]
    return out


SPATIAL_WINDOWS = (10, 7, 5, 3)  # tiles per window side, largest first (SEQUOIA's spatial mode uses 10)


def sampled_tile_maps(
    tile_features: np.ndarray,
    tile_coords: np.ndarray,
    tile_size_level0: float,
    ensemble: FoldEnsemble,
    gene_indices: Sequence[int],
    sampled_share: float,
    windows: Sequence[int] = SPATIAL_WINDOWS,
) -> tuple[np.ndarray, int]:
    """Per-tile maps with the largest window that covers at least half of the tiles, and that window size.

    SEQUOIA evaluates 10 x 10 windows holding more than 50 tiles. When only a sample of the tissue tiles has
    features (``sampled_share`` = used / kept tiles), the fill rule is scaled by that share; a small biopsy
    has no such window at all, so smaller windows are tried in turn (the caller states the size used).
    """
    min_fill = 0.5 * sampled_share
    values = np.full((len(tile_coords), len(gene_indices)), np.nan)
    for window in windows:
        values = spatial_expression(
            tile_features,
            tile_coords,
            tile_size_level0,
            ensemble,
            gene_indices,
            window,
            window,
            min_fill=min_fill,
        )
        if np.isfinite(values[:, 0]).mean() >= 0.5:
            return values, window
    return values, windows[-1]
