"""Spatial mode: windows of tile tokens, zero-padded to 100, evaluated only when more than min_fill full."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sequoia_clinic.aggregator.configs import VisConfig
from sequoia_clinic.aggregator.ensemble import FoldEnsemble
from sequoia_clinic.aggregator.spatial import spatial_expression
from sequoia_clinic.aggregator.vis import build_vis

TILE = 512.0  # level-0 pixels per tile (a 40x slide read at 20x)


def _ensemble() -> FoldEnsemble:
    config = VisConfig(
        num_outputs=6, input_dim=8, depth=1, nheads=2, dimensions_f=4, dimensions_s=4, dimensions_c=4
    )
    torch.manual_seed(0)
    return FoldEnsemble("vis", config, [build_vis(config), build_vis(config)], torch.device("cpu"))


def _tiles():
    """A 23 x 12 lattice of tiles offset from the origin, with a hole, in shuffled order."""
    cols, rows = np.meshgrid(np.arange(23), np.arange(12), indexing="ij")
    grid = np.stack([cols.ravel(), rows.ravel()], axis=1)
    grid = grid[~((grid[:, 0] >= 4) & (grid[:, 0] < 8))]  # columns 4-7 empty: window x0=0 is 60 % full
    rng = np.random.default_rng(1)
    grid = grid[rng.permutation(len(grid))]
    coords = (grid * TILE + np.array([1000.0, 3000.0])).astype(np.int64)
    features = rng.normal(size=(len(grid), 8)).astype(np.float32)
    return grid - grid.min(axis=0), coords, features


def _window_value(ensemble, grid, features, x0, y0, genes, more_than=50):
    """Independent: collect the window's tiles column by column, pad to 100 rows, average the folds."""
    tokens = []
    for x in range(x0, x0 + 10):
        for y in range(y0, y0 + 10):
            hit = np.flatnonzero((grid[:, 0] == x) & (grid[:, 1] == y))
            if hit.size:
                tokens.append(features[hit[0]])
    if len(tokens) <= more_than:
        return None
    padded = np.zeros((100, 8), np.float32)
    padded[: len(tokens)] = tokens
    with torch.inference_mode():
        outs = [m(torch.from_numpy(padded)[None]).numpy()[0] for m in ensemble.models]
    return np.mean(outs, axis=0)[genes]


def test_non_overlapping_windows_give_each_tile_its_window_value():
    ensemble = _ensemble()
    grid, coords, features = _tiles()
    genes = [0, 3, 5]
    got = spatial_expression(features, coords, TILE, ensemble, genes, window=10, stride=10)
    assert got.shape == (len(features), 3)
    for i in np.random.default_rng(2).choice(len(features), 25, replace=False):
        x0, y0 = (grid[i] // 10) * 10
        expected = _window_value(ensemble, grid, features, x0, y0, genes)
        if expected is None:
            assert np.isnan(got[i]).all()
        else:
            np.testing.assert_allclose(got[i], expected, atol=1e-5)
    # windows over rows 10-11 or columns 20-22 hold at most 30 tiles: their tiles stay NaN;
    # the 60 %-full window (columns 0-9) counts
    inside = (grid[:, 1] < 10) & (grid[:, 0] < 20)
    assert np.isnan(got[~inside]).all()
    assert np.isfinite(got[inside]).all()


def test_overlapping_windows_average_every_covering_window():
    ensemble = _ensemble()
    grid, coords, features = _tiles()
    got = spatial_expression(features, coords, TILE, ensemble, [1], window=10, stride=5)
    i = int(np.flatnonzero((grid[:, 0] == 9) & (grid[:, 1] == 6))[0])
    values = [
        v
        for x0 in (0, 5)
        for y0 in (0, 5)
        if (v := _window_value(ensemble, grid, features, x0, y0, [1])) is not None
    ]
    assert len(values) >= 2
    np.testing.assert_allclose(got[i], np.mean(values, axis=0), atol=1e-5)


def test_min_fill_admits_sparser_windows():
    ensemble = _ensemble()
    grid, coords, features = _tiles()
    got = spatial_expression(features, coords, TILE, ensemble, [2], window=10, stride=10, min_fill=0.25)
    corner = int(np.flatnonzero((grid[:, 0] == 21) & (grid[:, 1] == 3))[0])  # window x0=20: 30 tiles > 25
    expected = _window_value(ensemble, grid, features, 20, 0, [2], more_than=25)
    np.testing.assert_allclose(got[corner], expected, atol=1e-5)
    bottom = int(np.flatnonzero((grid[:, 0] == 15) & (grid[:, 1] == 11))[0])  # window (10, 10): 20 tiles
    assert np.isnan(got[bottom]).all()
    default = spatial_expression(features, coords, TILE, ensemble, [2], window=10, stride=10)
    assert np.isnan(default[corner]).all()  # 30 tiles are not more than half of 100
    with pytest.raises(ValueError, match="min_fill"):
        spatial_expression(features, coords, TILE, ensemble, [2], min_fill=1.0)
