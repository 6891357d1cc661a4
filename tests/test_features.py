"""Cluster features (k-means rows, fewer-than-100 and empty-cluster rules), tile sampling, feature cache."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from sklearn.cluster import KMeans

from sequoia_clinic.features.cache import CacheLookup, FeatureCache, cache_key
from sequoia_clinic.features.clusters import cluster_features
from sequoia_clinic.features.sampling import check_order, first_passing, kmeans_order
from sequoia_clinic.settings import TileOrder


def _blobs(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(12, d))
    return (centres[rng.integers(0, 12, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_kmeans_rows_are_cluster_means_in_label_order():
    x = _blobs(400)
    result = cluster_features(x, n_clusters=100, seed=0, n_init=1)
    assert result.features.shape == (100, 16) and result.features.dtype == np.float32
    assert result.method == "kmeans" and result.n_populated == 100 and not result.filled_rows
    assert not result.warnings
    # independent: scikit-learn's own defaults (n_init='auto' = one k-means++ run) give the same labels
    labels = KMeans(n_clusters=100, random_state=0).fit(x).labels_
    np.testing.assert_array_equal(result.labels, labels)
    for k in (0, 17, 99):
        np.testing.assert_allclose(
            result.features[k], x[labels == k].astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-5
        )


def test_cluster_features_are_deterministic():
    x = _blobs(300, seed=1)
    a, b = cluster_features(x), cluster_features(x.copy())
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize("fill", ["slide-mean", "zeros"])
def test_fewer_tiles_than_clusters_uses_tiles_as_tokens(fill):
    x = _blobs(42, seed=2)
    result = cluster_features(x, n_clusters=100, fill=fill)
    assert result.method == "tiles" and result.n_populated == 42
    np.testing.assert_array_equal(result.features[:42], x)
    np.testing.assert_array_equal(result.labels, np.arange(42))
    expected_fill = x.astype(np.float64).mean(axis=0) if fill == "slide-mean" else np.zeros(16)
    np.testing.assert_allclose(result.features[42:], np.broadcast_to(expected_fill, (58, 16)), atol=1e-5)
    assert result.filled_rows == tuple(range(42, 100))
    assert result.warnings[0].code == "few-tiles" and "only 42 usable tiles" in result.warnings[0].message
    assert np.isfinite(result.features).all()


def test_empty_clusters_are_filled_never_nan():
    distinct = _blobs(60, seed=3)
    x = np.concatenate([distinct, distinct, distinct[:30]])  # 150 tiles, only 60 distinct features
    result = cluster_features(x, n_clusters=100)
    assert result.method == "kmeans"
    assert result.n_populated <= 60 and len(result.filled_rows) == 100 - result.n_populated
    assert np.isfinite(result.features).all()
    slide_mean = x.astype(np.float64).mean(axis=0)
    for row in result.filled_rows:
        np.testing.assert_allclose(result.features[row], slide_mean, atol=1e-5)
    populated = sorted(set(range(100)) - set(result.filled_rows))
    for row in populated[:5]:
        np.testing.assert_allclose(result.features[row], x[result.labels == row].mean(axis=0), atol=1e-6)
    assert set(np.unique(result.labels)) == set(populated)
    assert result.warnings[0].code == "empty-clusters" and "issue #20" in result.warnings[0].message


def test_cluster_features_refuse_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        cluster_features(np.full((5, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="n >= 1"):
        cluster_features(np.zeros((0, 3), np.float32))


def test_grid_order_checks_a_python_random_shuffle_and_keeps_grid_order():
    candidates = np.arange(10, 5010, 2)  # 2,500 candidate tiles of a 100 x 60 grid
    order = check_order(TileOrder.GRID, candidates, (100, 60), (100, 60), 99)
    expected = candidates.tolist()
    random.Random(99).shuffle(expected)
    assert order.tolist() == expected
    assert not np.array_equal(order, check_order(TileOrder.GRID, candidates, (100, 60), (100, 60), 98))
    passed = np.zeros(6000, bool)
    passed[candidates[::3]] = True  # 834 pass
    assert np.array_equal(
        first_passing(order, passed, 4000),
        candidates[::3][np.argsort([expected.index(i) for i in candidates[::3]])],
    )
    sample = first_passing(order, passed, 100)
    assert sample.tolist() == [i for i in expected if passed[i]][:100]
    assert np.array_equal(kmeans_order(TileOrder.GRID, sample, np.zeros((6000, 2))), np.sort(sample))


def test_feature_cache_round_trip_and_keys(tmp_path):
    cache = FeatureCache(tmp_path)
    material = {"slide_sha256": "ab" * 32, "encoder": "uni", "tiles": {"tile_px": 256}}
    key = cache_key(material)
    assert key == cache_key(dict(reversed(list(material.items()))))
    assert key != cache_key({**material, "encoder": "resnet50"})
    assert key != cache_key({**material, "tiles": {"tile_px": 224}})
    weights = "cd" * 32
    assert cache.load(key, weights) == CacheLookup(None)  # no entry: a plain miss, no problem
    arrays = {"tile_features": np.arange(6, dtype=np.float32).reshape(2, 3), "used_indices": np.array([4, 1])}
    path = cache.save(key, arrays, {"cluster_method": "tiles"}, weights_sha256=weights)
    entry = cache.load(key, weights).entry
    assert entry is not None and entry.meta["cluster_method"] == "tiles"
    assert entry.meta["weights_sha256"] == weights
    assert (
        entry.meta["checksum"]
        == hashlib.sha256(
            b"tile_features|<f4|(2, 3)|"
            + arrays["tile_features"].tobytes()
            + b"used_indices|"
            + f"{arrays['used_indices'].dtype.str}|(2,)|".encode()
            + arrays["used_indices"].tobytes()
        ).hexdigest()
    )
    np.testing.assert_array_equal(entry.arrays["tile_features"], arrays["tile_features"])
    other = cache.load(key, "ef" * 32)  # made by other encoder weights: never used
    assert other.entry is None and "other encoder weights" in str(other.problem)
    path.write_bytes(b"truncated")
    truncated = cache.load(key, weights)
    assert truncated.entry is None and "cannot be read" in str(truncated.problem)


def test_feature_cache_refuses_tampered_and_non_finite_entries(tmp_path):
    cache = FeatureCache(tmp_path)
    key, weights = "ab" * 32, "cd" * 32
    arrays = {"tile_features": np.ones((2, 3), dtype=np.float32)}
    path = cache.save(key, arrays, {}, weights_sha256=weights)
    with np.load(path, allow_pickle=False) as data:
        stored = {name: data[name] for name in data.files}
    tampered = dict(stored, tile_features=np.full((2, 3), 2.0, dtype=np.float32))
    np.savez(path, **tampered)
    assert "checksum" in str(cache.load(key, weights).problem)
    nan = np.ones((2, 3), dtype=np.float32)
    nan[0, 0] = np.nan
    cache.save(key, {"tile_features": nan}, {}, weights_sha256=weights)  # a consistent entry holding NaN
    assert "non-finite" in str(cache.load(key, weights).problem)
    np.savez(path, tile_features=nan, __meta__=np.array("[" * 100 + "]" * 100))
    assert cache.load(key, weights).entry is None  # deep index: refused without RecursionError


def test_feature_cache_probe_reports_an_unusable_folder_and_creates_nothing(tmp_path):
    fresh = FeatureCache(tmp_path / "new" / "cache")
    assert fresh.write_problem() is None and not (tmp_path / "new").exists()  # probed, nothing left
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert FeatureCache(blocker).write_problem() == "Not a directory"
    below = FeatureCache(blocker / "cache")
    assert below.write_problem() == "Not a directory"
    assert below.load("ab" * 32, "cd" * 32).entry is None  # reading an unusable cache is a miss, not an error
    with pytest.raises(OSError):
        below.save("ab" * 32, {"x": np.zeros(1)}, {}, weights_sha256="cd" * 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
