"""Tile selection near the decode bound: the vectorised pixel check, stopping at the cap, one decode per
used tile, and the reference tile order.

The pixel check is compared with the per-tile computation written here with Pillow and skimage (what the
SEQUOIA preprocessing and our earlier code did), on every tile of the real slides and on synthetic tiles
made to sit on its decision boundaries. Early stopping is compared with "check every candidate, then take
the first max_tiles of the order". The reference order is re-implemented here from the description in
../shared/reference/sequoia.md and training.md (a column-major grid shuffled with numpy seed 5, the first
valid tiles up to the cap, k-means in the byte order of the "x_y" keys).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from skimage.exposure import is_low_contrast
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from sequoia_clinic.bundles.manifest import parse_bundle
from sequoia_clinic.cli.options import build_settings
from sequoia_clinic.errors import BundleError
from sequoia_clinic.features.sampling import check_order, first_passing, kmeans_order, reference_lattice_shape
from sequoia_clinic.pipeline.predict import PredictRequest, load_folds, run_prediction
from sequoia_clinic.settings import FeatureSettings, Settings, TileOrder
from sequoia_clinic.slides import tiling
from sequoia_clinic.slides.opening import open_slide
from sequoia_clinic.slides.tile_reader import NativeTileCache, TileReader, iter_tile_batches
from sequoia_clinic.slides.tiling import (
    SelectedChunk,
    TileSelection,
    build_tile_grid,
    full_batches,
    select_tiles,
)
from sequoia_clinic.slides.tissue import compute_tissue_mask

SETTINGS = Settings()


def reference_check(tile: np.ndarray, threshold: float, min_fraction: float = 0.2) -> bool:
    """The per-tile check: skimage is_low_contrast, then the share of Pillow HSV saturation above threshold."""
    if is_low_contrast(tile):
        return False
    saturation = np.asarray(Image.fromarray(tile).convert("HSV"))[..., 1]
    return bool((saturation > threshold).mean() > min_fraction)


def candidates_and_pixels(path, mpp=None):
    with open_slide(path, mpp=mpp) as slide:
        grid = build_tile_grid(slide, compute_tissue_mask(slide, SETTINGS.tissue), SETTINGS.tiles)
        pixels = np.concatenate(
            [b.pixels for b in iter_tile_batches(slide, grid, np.arange(grid.n_tiles), SETTINGS.tiles)]
        )
    return grid, pixels


# -- the vectorised pixel check ------------------------------------------------------------------------------


@pytest.mark.parametrize(("slide", "mpp"), [("cmu_svs", None), ("tcga_svs", 0.5), ("mosaic_pyramid", None)])
def test_batch_check_decides_as_the_per_tile_code_on_real_slides(slide, mpp, request, monkeypatch):
    grid, pixels = candidates_and_pixels(request.getfixturevalue(slide), mpp)
    fallbacks = []
    monkeypatch.setattr(tiling, "is_low_contrast", lambda t: fallbacks.append(1) or is_low_contrast(t))
    got = tiling.passes_pixel_check(pixels, grid.mask_threshold, SETTINGS.tiles)
    expected = np.array([reference_check(t, grid.mask_threshold) for t in pixels])
    assert np.array_equal(got, expected) and 0 < expected.sum() < len(pixels)  # every tile of the grid
    assert len(fallbacks) <= 0.05 * len(pixels)  # skimage itself only for the rare undecided tile
    one = int(np.flatnonzero(expected)[0])
    assert tiling.tile_passes_pixel_check(pixels[one], grid.mask_threshold, SETTINGS.tiles)


@pytest.mark.parametrize("threshold", [-3.0, 0.0, 8.0, 47.0, 62.37, 170.0, 254.5, 255.0])
def test_saturation_share_matches_pillow_for_every_colour(threshold):
    """All 2^24 colours, as 256 tiles of 256 x 256 pixels: the integer rule counts exactly Pillow's pixels."""
    colours = np.arange(1 << 24, dtype=np.uint32)
    tiles = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], -1).astype(np.uint8)
    tiles = tiles.reshape(256, 65536, 3)
    high, low = tiles.max(axis=2), tiles.min(axis=2)
    pillow = np.asarray(Image.fromarray(tiles.reshape(4096, 4096, 3)).convert("HSV"))[..., 1].reshape(256, -1)
    expected = (pillow > threshold).sum(axis=1)
    np.testing.assert_array_equal(tiling._saturated_counts(high, low, threshold), expected)


def test_saturation_tie_path_is_exact_too(monkeypatch):
    """Were a Pillow version to round a tie down, the tie pixels are looked up in Pillow's own table."""
    monkeypatch.setattr(tiling, "_ties_round_up", lambda least: False)
    rng = np.random.default_rng(3)
    for threshold in (47.0, 62.9, 101.0):
        tiles = rng.integers(0, 256, size=(8, 4096, 3), dtype=np.uint8)
        tiles[:, :40] = (85, 64, 64)  # ties for least 63 and 48 ...
        tiles[:, 40:60] = 0  # black
        pillow = np.asarray(Image.fromarray(tiles.reshape(-1, 64, 3)).convert("HSV"))[..., 1]
        expected = (pillow.reshape(8, -1) > threshold).sum(axis=1)
        got = tiling._saturated_counts(tiles.max(axis=2), tiles.min(axis=2), threshold)
        np.testing.assert_array_equal(got, expected)


def test_contrast_bounds_are_sound():
    # the integer luminance is within _LUMA_ERROR of 65025 * rgb2gray at every colour (linear: check corners)
    corners = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], dtype=np.float64)
    key = corners @ np.array(tiling._LUMA, dtype=np.float64)
    gray = corners / 255.0 @ np.array([0.2125, 0.7154, 0.0721])
    assert np.abs(65025 * gray - key).max() <= tiling._LUMA_ERROR
    full, error = tiling._LUMA_FULL, tiling._LUMA_ERROR
    assert (tiling._NARROW + 2 * error) / full < tiling._CONTRAST_RANGE - 1e-6
    assert (tiling._GAP - 2 * error) / full > tiling._CONTRAST_RANGE + 1e-6


def _boundary_tiles(rng: np.random.Generator, size: int) -> np.ndarray:
    """Tiles whose contrast or tissue share sits on or near the decision thresholds."""
    tiles = []
    for k in range(48):
        base = rng.integers(40, 200, size=3)
        tile = np.empty((size, size, 3), np.uint8)
        tile[:] = base
        flat = tile.reshape(-1, 3)
        if k % 4 == 0:  # two colours whose luminance differs by exactly 0.1 (120 in red): ties in float
            flat[: flat.shape[0] // 2, 0] = min(int(base[0]) + 120, 255)
        elif k % 4 == 1:  # a luminance spread drawn around 0.1 of full scale
            spread = rng.uniform(0.08, 0.12) * 255
            flat[:] = np.clip(base + rng.uniform(0, spread, size=(flat.shape[0], 1)), 0, 255)
        elif k % 4 == 2:  # 1 % outliers at either end: p1 / p99 fall right at the jump
            flat[:] = np.clip(base + rng.normal(0, 2, size=flat.shape), 0, 255)
            count = int(round(0.01 * flat.shape[0])) + int(rng.integers(-2, 3))
            flat[:count] = np.clip(base - 30, 0, 255)
            flat[-count:] = np.clip(base + 30, 0, 255)
        else:  # tissue share right at 20 %: saturated pink on white
            flat[:] = 235 + rng.integers(-12, 13, size=flat.shape)
            count = int(0.2 * flat.shape[0]) + int(rng.integers(-1, 2))
            flat[:count] = np.array([180, 60, 150]) + rng.integers(-40, 41, size=(count, 3))
        tiles.append(tile)
    return np.stack(tiles)


@pytest.mark.parametrize("size", [256, 250, 224])
def test_batch_check_on_boundary_tiles_and_odd_sizes(size):
    rng = np.random.default_rng(size)
    tiles = _boundary_tiles(rng, size)
    for threshold in (20.0, 47.5):
        got = tiling.passes_pixel_check(tiles, threshold, SETTINGS.tiles)
        expected = [reference_check(t, threshold) for t in tiles]
        assert got.tolist() == expected
    flags = dataclasses.replace(SETTINGS.tiles, reject_low_contrast=False, min_tissue_fraction=0.0)
    got = tiling.passes_pixel_check(tiles, 20.0, flags)
    shares = [(np.asarray(Image.fromarray(t).convert("HSV"))[..., 1] > 20.0).mean() > 0.0 for t in tiles]
    assert got.tolist() == shares
    assert tiling.passes_pixel_check(tiles[:0], 20.0, SETTINGS.tiles).shape == (0,)
    with pytest.raises(ValueError, match="uint8 tiles"):
        tiling.passes_pixel_check(tiles.astype(np.float32), 20.0, SETTINGS.tiles)


# -- stopping at the cap -------------------------------------------------------------------------------------


def _all_passing(slide, grid) -> np.ndarray:
    """Every candidate checked (the full selection): the flags "check all, then sample" starts from."""
    full = select_tiles(slide, grid, SETTINGS.tiles)
    assert full.checked is not None and np.array_equal(full.checked, grid.keep)
    return full.keep


@pytest.mark.parametrize("order_rule", [TileOrder.GRID, TileOrder.REFERENCE])
def test_selection_stops_at_the_cap_with_the_tiles_of_check_all_then_sample(order_rule, mosaic_pyramid):
    small = dataclasses.replace(SETTINGS.tiles, batch_size=5)  # chunks of 20: many rounds and chunks
    with open_slide(mosaic_pyramid) as slide:
        grid = build_tile_grid(slide, compute_tissue_mask(slide, SETTINGS.tissue), SETTINGS.tiles)
        passing = _all_passing(slide, grid)
        shape = reference_lattice_shape(grid.level_size, grid.read_px)
        order = check_order(order_rule, grid.kept_indices, grid.grid_shape, shape, 99)
        assert sorted(order.tolist()) == grid.kept_indices.tolist()  # a permutation of the candidates
        n_pass = int(passing.sum())
        assert n_pass > 100
        for k, cap in enumerate((1, 7, 60, n_pass - 1, n_pass, n_pass + 50)):
            expected = first_passing(order, passing, cap)
            selection = TileSelection(slide, grid, order, cap, small)
            chunks = list(selection.chunks(ahead=k % 2 == 0))  # read ahead (GPU) or in turn (CPU): same tiles
            result = selection.result()
            found = np.concatenate([c.indices for c in chunks])
            assert sorted(found.tolist()) == sorted(expected.tolist())
            # exactly the prefix of the order up to the last tile used: nothing beyond the cap is read
            last = int(np.flatnonzero(np.isin(order, expected))[-1]) if cap < n_pass else len(order) - 1
            assert sorted(np.flatnonzero(result.checked).tolist()) == sorted(order[: last + 1].tolist())
            assert selection.decoded_tiles == last + 1
            assert np.array_equal(result.keep & result.checked, np.isin(np.arange(grid.n_tiles), expected))
            # the pixels handed on are the tiles' own
            with TileReader(slide, grid, small) as reader:
                for chunk in chunks[:2]:
                    np.testing.assert_array_equal(chunk.tiles, reader.read(chunk.checked))
                batches = [b for group in full_batches(iter(chunks[:2]), 3) for b in group]
                passed = np.concatenate([c.indices for c in chunks[:2]])
                assert np.array_equal(np.concatenate([b.indices for b in batches]), passed)
                np.testing.assert_array_equal(
                    np.concatenate([b.pixels for b in batches]), reader.read(passed)
                )
            capped = select_tiles(slide, grid, small, order, cap)
            assert np.array_equal(capped.keep, result.keep)
            # unchecked candidates still count as kept: keep.sum() estimates the slide's tissue tiles
            assert np.array_equal(result.keep & ~result.checked, grid.keep & ~result.checked)


def test_grid_order_below_the_cap_is_every_kept_tile_in_grid_order(cmu_svs):
    with open_slide(cmu_svs) as slide:
        grid = build_tile_grid(slide, compute_tissue_mask(slide, SETTINGS.tissue), SETTINGS.tiles)
        passing = _all_passing(slide, grid)
    order = check_order(TileOrder.GRID, grid.kept_indices, grid.grid_shape, grid.grid_shape, 99)
    used = kmeans_order(TileOrder.GRID, first_passing(order, passing, 4000), grid.coords)
    assert used.tolist() == np.flatnonzero(passing).tolist()  # what predictions used before: unchanged


def test_selection_with_no_passing_tile_is_an_error(cmu_svs):
    with open_slide(cmu_svs) as slide:
        grid = build_tile_grid(slide, compute_tissue_mask(slide, SETTINGS.tissue), SETTINGS.tiles)
        selection = TileSelection(slide, grid, np.array([0]), 5, SETTINGS.tiles)  # the glass corner
        assert list(selection.chunks()) == []
        with pytest.raises(Exception, match="no tile at 0.5 um/px holds enough tissue"):
            selection.result()
        with pytest.raises(ValueError, match="max_keep"):
            TileSelection(slide, grid, np.array([0]), 0, SETTINGS.tiles)


# -- one decode per used tile --------------------------------------------------------------------------------


def _count_decodes(monkeypatch) -> tuple[Counter, Counter]:
    """Stored tiles decoded by the tile reader, and output tiles cut, per key (the tissue mask not counted)."""
    native, cut = Counter(), Counter()
    decode, cut_tiles = NativeTileCache._decode, TileReader._cut

    def counting_decode(self, keys):
        native.update((self.level, column, row) for column, row in keys)
        return decode(self, keys)

    def counting_cut(self, indices, tiles, out=None):
        cut.update(int(i) for i in indices)
        return cut_tiles(self, indices, tiles, out)

    monkeypatch.setattr(NativeTileCache, "_decode", counting_decode)
    monkeypatch.setattr(TileReader, "_cut", counting_cut)
    return native, cut


@pytest.mark.parametrize(
    ("slide", "max_tiles"), [("cmu_svs", None), ("cmu_svs", 10), ("mosaic_pyramid", 150)]
)
def test_predict_decodes_each_used_tile_once(slide, max_tiles, demo_bundle, monkeypatch, request):
    path = request.getfixturevalue(slide)
    native, cut = _count_decodes(monkeypatch)
    settings = Settings(features=FeatureSettings(max_tiles=max_tiles))
    result = run_prediction(PredictRequest(path), demo_bundle, load_folds(demo_bundle, settings), settings)
    assert set(result.used_indices.tolist()) <= set(cut)
    assert max(cut.values()) == 1  # every checked tile cut out once; its pixels are the encoder's
    assert sorted(cut) == np.flatnonzero(result.grid.checked).tolist()
    assert max(native.values()) == 1  # and every stored (JPEG) tile decoded once
    grid = result.grid
    width, height = grid.level_size
    with open_slide(path) as opened:
        tile_w, tile_h = opened.native_tile_size(grid.level)
    under = set()
    for x, y in grid.level_coords()[sorted(cut)]:
        for row in range(y // tile_h, min(-(-(y + grid.read_px) // tile_h), -(-height // tile_h))):
            for col in range(x // tile_w, min(-(-(x + grid.read_px) // tile_w), -(-width // tile_w))):
                under.add((grid.level, col, row))
    assert set(native) == under  # only the stored tiles under checked tiles, and each of them once
    print(f"{slide}: {len(result.used_indices)} used, {len(cut)} checked, {len(native)} stored tiles decoded")


# -- the reference order -------------------------------------------------------------------------------------


def reference_tiles(width: int, height: int, step: int, valid: set[tuple[int, int]], cap: int) -> list[str]:
    """The reference rule, from its description: the keys k-means sees, in order."""
    positions = [(x, y) for x in range(0, width, step) for y in range(0, height, step)]
    np.random.seed(5)
    np.random.shuffle(positions)
    kept = []
    for x, y in positions:
        if (x, y) in valid:
            kept.append(f"{x}_{y}")
            if len(kept) >= cap:
                break
    return sorted(kept, key=lambda key: key.encode("ascii"))  # h5py lists keys in byte order


def cluster_means(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's k-means step: labels, and the mean of each cluster (NaN rows where empty)."""
    labels = KMeans(n_clusters=100, random_state=0, n_init=1).fit(features).labels_
    means = np.full((100, features.shape[1]), np.nan, np.float32)
    for k in np.unique(labels):
        means[k] = features[labels == k].mean(axis=0)
    return labels, means


@pytest.mark.parametrize("cap", [4000, 120])
def test_reference_order_on_tcga_equals_an_independent_reimplementation(cap, tcga_svs, demo_bundle):
    with open_slide(tcga_svs, mpp=0.5) as slide:
        grid = build_tile_grid(slide, compute_tissue_mask(slide, SETTINGS.tissue), SETTINGS.tiles)
        assert (grid.level, grid.read_px) == (0, 256)  # 0.5 um/px at level 0: the reference's 20x grid
        width, height = slide.info.level_dimensions[0]
        valid = set()
        for index in grid.kept_indices:  # every candidate, with the per-tile check
            x, y = (int(v) for v in grid.coords[index])
            if reference_check(slide.read_region((x, y), 0, (256, 256)), grid.mask_threshold):
                valid.add((x, y))
    keys = reference_tiles(width, height, 256, valid, cap)
    assert len(keys) == min(cap, len(valid)) and len(keys) >= 100

    settings = Settings(features=FeatureSettings(max_tiles=cap, tile_order=TileOrder.REFERENCE))
    result = run_prediction(
        PredictRequest(tcga_svs, mpp=0.5), demo_bundle, load_folds(demo_bundle, settings), settings
    )
    assert [f"{x}_{y}" for x, y in result.tile_coords] == keys
    # the same tile features, put in the reimplementation's order, give our cluster features exactly
    row_of = {f"{x}_{y}": r for r, (x, y) in enumerate(result.tile_coords)}
    features = result.tile_features[[row_of[k] for k in keys]]
    assert result.clusters.method == "kmeans"
    labels, means = cluster_means(features)
    np.testing.assert_array_equal(result.clusters.labels, labels)
    populated = np.isfinite(means[:, 0])
    assert populated.sum() == result.clusters.n_populated
    np.testing.assert_allclose(result.cluster_features[populated], means[populated], rtol=0, atol=1e-6)
    # the same tiles in grid order give another partition: the order is what changes the prediction
    in_grid_order = np.lexsort((result.tile_coords[:, 0], result.tile_coords[:, 1]))
    grid_labels, _ = cluster_means(result.tile_features[in_grid_order])
    assert adjusted_rand_score(grid_labels, labels[in_grid_order]) < 0.95


def test_reference_check_order_matches_the_column_major_numpy_shuffle():
    """On a lattice with partial edge positions: numpy's shuffle of the (x, y) list, whole candidates only."""
    width, height, step = 2000, 1300, 256  # 8 x 6 positions, 7 x 5 whole tiles
    rows, columns = height // step, width // step
    rng = random.Random(1)
    candidates = np.array(sorted(rng.sample(range(rows * columns), 20)))
    order = check_order(
        TileOrder.REFERENCE, candidates, (rows, columns), reference_lattice_shape((width, height), step), 0
    )
    positions = [(x, y) for x in range(0, width, step) for y in range(0, height, step)]
    np.random.seed(5)
    np.random.shuffle(positions)
    wanted = {(int(c % columns) * step, int(c // columns) * step) for c in candidates}
    expected = [(y // step) * columns + x // step for x, y in positions if (x, y) in wanted]
    assert order.tolist() == expected
    coords = np.stack(
        [np.arange(rows * columns) % columns * step, np.arange(rows * columns) // columns * step], 1
    )
    used = kmeans_order(TileOrder.REFERENCE, order[:10], coords)
    keys = [f"{coords[i, 0]}_{coords[i, 1]}" for i in used]
    assert keys == sorted(keys, key=str.encode) and set(used) == set(order[:10])


# -- bundle field, settings, CLI and cache ---------------------------------------------------------------


def test_bundle_tile_order_field(demo_bundle, tmp_path):
    import json
    import shutil

    assert demo_bundle.preprocessing.tile_order is TileOrder.GRID  # manifests without the field: grid
    copy = tmp_path / "bundle"
    shutil.copytree(demo_bundle.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["preprocessing"]["tile_order"] = "reference"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert parse_bundle(copy).preprocessing.tile_order is TileOrder.REFERENCE
    manifest["preprocessing"]["tile_order"] = "diagonal"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="tile_order"):
        parse_bundle(copy)


def test_tile_order_option_setting_and_cache_key(cmu_svs, demo_bundle, tmp_path, cli):
    assert build_settings(tile_order=TileOrder.REFERENCE).features.tile_order is TileOrder.REFERENCE
    assert build_settings().features.tile_order is None  # the bundle decides
    grid_run = run_prediction(
        PredictRequest(cmu_svs), demo_bundle, load_folds(demo_bundle, SETTINGS), Settings(cache_dir=tmp_path)
    )
    reference = Settings(cache_dir=tmp_path, features=FeatureSettings(tile_order=TileOrder.REFERENCE))
    folds = load_folds(demo_bundle, reference)
    first = run_prediction(PredictRequest(cmu_svs), demo_bundle, folds, reference)
    assert not first.cache_hit  # the tile order is part of the cache key
    assert run_prediction(PredictRequest(cmu_svs), demo_bundle, folds, reference).cache_hit
    # 42 tiles, fewer than the cap: the same tiles, in another order (here each tile is its own token)
    assert sorted(first.used_indices.tolist()) == grid_run.used_indices.tolist()
    assert first.used_indices.tolist() != grid_run.used_indices.tolist()
    keys = [f"{x}_{y}" for x, y in first.tile_coords]
    assert keys == sorted(keys)
    out = tmp_path / "x.csv"
    bad = cli(["predict", str(cmu_svs), "--out", str(out), "--no-cache", "-q", "--tile-order", "diagonal"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "diagonal" in bad.stderr
    good = cli(
        [
            "predict",
            str(cmu_svs),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path),
            "-q",
            "--tile-order",
            "reference",
            "--genes",
            "ESR1",
        ]
    )
    assert good.exit_code == 0, good.output
    assert "features from cache" in good.stdout  # the reference-order entry made above


@pytest.mark.parametrize("size", [1, 4, 7, 64])
def test_full_batches_regroup_the_passing_tiles_of_chunks_into_equal_batches(size):
    """Every passing tile once, in reading order, with its own pixels; every batch but the last holds exactly
    ``size`` tiles; tiles carried over to the next chunk are copies (the chunk's buffer is not held)."""
    rng = np.random.default_rng(size)
    chunks, expected = [], []
    start = 0
    for n in (5, 1, 12, 3, 30, 9):
        checked = np.arange(start, start + n, dtype=np.int64) * 3  # grid indices, not rows
        passed = rng.random(n) < 0.6
        passed[0] = True  # chunks() yields only chunks with a passing tile
        tiles = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
        chunks.append(SelectedChunk(checked, passed, tiles))
        expected += [(int(i), t) for i, t, p in zip(checked, tiles, passed, strict=True) if p]
        start += n
    groups = list(full_batches(iter(chunks), size))
    batches = [b for group in groups for b in group]
    assert all(group for group in groups)
    assert [len(b.indices) for b in batches[:-1]] == [size] * (len(batches) - 1)
    assert 1 <= len(batches[-1].indices) <= size
    got = [(int(i), t) for b in batches for i, t in zip(b.indices, b.pixels, strict=True)]
    assert [i for i, _ in got] == [i for i, _ in expected]
    for (_, mine), (_, theirs) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    chunk_of = {int(i): k for k, c in enumerate(chunks) for i in c.checked}
    for b in batches:
        sources = {chunk_of[int(i)] for i in b.indices}
        if len(sources) > 1 or len(b.indices) < size:  # made of carried-over tiles: a copy
            assert not any(np.shares_memory(b.pixels, c.tiles) for c in chunks)
