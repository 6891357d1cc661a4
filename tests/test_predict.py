"""End to end on the real CMU slide with the demo bundle: run_prediction and the `predict` command."""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from skimage.exposure import is_low_contrast

from sequoia_clinic.bundles.store import load_bundle_encoder
from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.encoders.model import has_native_bf16
from sequoia_clinic.errors import ChecksumError, OptionError
from sequoia_clinic.features.cache import FeatureCache
from sequoia_clinic.fileio import atomic_path
from sequoia_clinic.pipeline import predict as inference
from sequoia_clinic.pipeline.predict import (
    PredictRequest,
    load_folds,
    resolve_feature_settings,
    run_prediction,
)
from sequoia_clinic.settings import FeatureSettings, Settings
from sequoia_clinic.slides.opening import open_slide
from sequoia_clinic.slides.tiling import build_tile_grid
from sequoia_clinic.slides.tissue import compute_tissue_mask, saturation

META = ["slide_sha256", "bundle", "bundle_version", "bundle_trained", "tiles_used", "clusters_populated"]
CMU_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"  # from the data README


def run_inference(slide, bundle, settings: Settings, mpp: float | None = None):
    """One prediction with the bundle's folds loaded here (what score and cohort do)."""
    return run_prediction(PredictRequest(slide, mpp=mpp), bundle, load_folds(bundle, settings), settings)


def test_run_inference_records_inputs_and_qc(cmu_svs, demo_bundle, tmp_path):
    result = run_inference(cmu_svs, demo_bundle, Settings(cache_dir=tmp_path))
    assert result.slide_sha256 == CMU_SHA256
    assert result.expression.shape == (20820,) and np.isfinite(result.expression).all()
    assert result.per_fold.shape == (2, 20820)
    np.testing.assert_allclose(result.expression, result.per_fold.astype(np.float64).mean(axis=0))
    assert result.genes == demo_bundle.genes and not result.cache_hit
    n_kept = len(result.kept_indices)
    assert 0 < n_kept < 100  # a small skin region: the fewer-than-100 rule applies
    np.testing.assert_array_equal(result.used_indices, result.kept_indices)
    assert result.tile_features.shape == (n_kept, 64)
    np.testing.assert_array_equal(result.cluster_features[:n_kept], result.tile_features)
    assert result.clusters.method == "tiles" and result.clusters.n_populated == n_kept
    assert any(w.code == "untrained-bundle" and "NOT trained" in w.message for w in result.qc_warnings)
    assert any(f"only {n_kept} usable tiles" in w.message for w in result.qc_warnings)
    assert result.tile_coords.shape == (n_kept, 2)
    assert {"encode", "cluster", "predict", "total"} <= set(result.timings)

    again = run_inference(cmu_svs, demo_bundle, Settings(cache_dir=tmp_path))
    assert again.cache_hit and again.extraction is None and "encode" not in again.timings
    np.testing.assert_array_equal(again.expression, result.expression)
    np.testing.assert_array_equal(again.grid.keep, result.grid.keep)


def _capped(max_tiles: int, **settings) -> Settings:
    return Settings(features=FeatureSettings(max_tiles=max_tiles), **settings)


def _grid_order_sample(slide_path, max_tiles: int, seed: int) -> tuple[list[int], list[int]]:
    """(used tiles in grid order, the candidates checked up to the cap), independently of the pipeline.

    The candidates are checked one by one in a ``random.Random(seed).shuffle`` of the grid-order list, with
    the per-tile Pillow/skimage check, until ``max_tiles`` passed.
    """
    settings = Settings()
    with open_slide(slide_path) as slide:
        mask = compute_tissue_mask(slide, settings.tissue)
        grid = build_tile_grid(slide, mask, settings.tiles)
        order = grid.kept_indices.tolist()
        random.Random(seed).shuffle(order)
        used, checked = [], []
        for index in order:
            x, y = grid.coords[index]
            tile = slide.read_region((int(x), int(y)), grid.level, (grid.read_px,) * 2)
            checked.append(index)
            if not is_low_contrast(tile) and (saturation(tile) > grid.mask_threshold).mean() > 0.2:
                used.append(index)
                if len(used) == max_tiles:
                    break
    return sorted(used), checked


def test_tile_cap_stops_at_the_first_passing_tiles_of_the_seeded_order(cmu_svs, demo_bundle):
    result = run_inference(cmu_svs, demo_bundle, _capped(10))
    assert result.max_tiles == 10 and result.sample_seed == 99
    expected, checked = _grid_order_sample(cmu_svs, 10, 99)
    assert result.used_indices.tolist() == expected  # grid order: k-means sees them as the grid lists them
    assert np.flatnonzero(result.grid.checked).tolist() == sorted(checked)  # nothing past the cap is read
    assert len(checked) < 49  # of the 49 mask candidates (test_cmu_grid_geometry)
    assert result.tile_features.shape == (10, 64)
    native = has_native_bf16(torch.device("cpu"))  # the default "auto": bf16 where the CPU has it
    assert result.settings_used.precision == ("bf16" if native else "fp32")
    # row i is tile used[i]: compared with an independent read of each tile and a separate encoder call
    grid = result.grid
    corners = grid.level_coords()[result.used_indices]
    with open_slide(cmu_svs) as slide:
        pixels = np.stack(
            [slide.read_level_region(grid.level, (int(x), int(y)), (grid.read_px,) * 2) for x, y in corners]
        )
    assert not grid.resampled
    encoder = load_bundle_encoder(demo_bundle, torch.device("cpu"))
    np.testing.assert_allclose(result.tile_features, encoder.embed(pixels).numpy(), atol=1e-5)
    # the bundle's folds reproduce the prediction from the cluster features
    _, mean = load_folds(demo_bundle, Settings()).predict(result.cluster_features)
    np.testing.assert_array_equal(mean[0], result.expression)


def test_bundle_preprocessing_is_the_default_and_explicit_settings_win(cmu_svs, demo_bundle):
    pre = dataclasses.replace(demo_bundle.preprocessing, max_tiles=7, sample_seed=5, kmeans_seed=3)
    bundle = dataclasses.replace(demo_bundle, preprocessing=pre)
    result = run_inference(cmu_svs, bundle, Settings())
    assert (result.max_tiles, result.sample_seed) == (7, 5)
    assert result.used_indices.tolist() == _grid_order_sample(cmu_svs, 7, 5)[0]
    assert result.settings_used.kmeans_seed == 3
    chosen = resolve_feature_settings(FeatureSettings(max_tiles=12, kmeans_n_init=4), pre)
    assert (chosen.max_tiles, chosen.sample_seed, chosen.kmeans_seed, chosen.kmeans_n_init) == (12, 5, 3, 4)
    assert chosen.n_clusters == pre.n_clusters == 100
    with pytest.raises(OptionError, match="max_tiles"):
        resolve_feature_settings(FeatureSettings(max_tiles=0), pre)


def test_an_unusable_cache_costs_a_warning_not_the_run(cmu_svs, demo_bundle, tmp_path, monkeypatch):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    uncached = run_inference(cmu_svs, demo_bundle, _capped(10, cache_dir=blocker / "cache"))
    assert "feature cache not written: Not a directory; the result is unaffected" in [
        w.message for w in uncached.qc_warnings
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]

    def disk_full(self, key, arrays, meta, weights_sha256):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path(key)))

    monkeypatch.setattr(FeatureCache, "save", disk_full)
    full = run_inference(cmu_svs, demo_bundle, _capped(10, cache_dir=tmp_path / "cache"))
    note = f"feature cache not written: {os.strerror(errno.ENOSPC)}; the result is unaffected"
    assert note in [w.message for w in full.qc_warnings] and str(tmp_path) not in note
    np.testing.assert_array_equal(full.expression, uncached.expression)


def test_cache_hits_verify_the_encoder_and_refuse_bad_entries(cmu_svs, demo_bundle, tmp_path):
    bundle = dataclasses.replace(demo_bundle, weights_cache=tmp_path / "weights")
    shutil.copytree(demo_bundle.weights_cache, bundle.weights_cache)
    settings = _capped(10, cache_dir=tmp_path / "cache")
    first = run_inference(cmu_svs, bundle, settings)
    hit = run_inference(cmu_svs, bundle, settings)
    assert hit.cache_hit and (tmp_path / "cache" / "sha256-memo.json").is_file()  # the hash was memoised
    # a corrupted entry is a miss with a QC note; the result is the same
    entry = next((tmp_path / "cache" / "features").glob("*/*.npz"))
    entry.write_bytes(entry.read_bytes()[:-20])
    redone = run_inference(cmu_svs, bundle, settings)
    assert not redone.cache_hit
    rejected = [w for w in redone.qc_warnings if w.code == "cache-entry-rejected"]
    assert len(rejected) == 1 and "the features were recomputed" in rejected[0].message
    np.testing.assert_array_equal(redone.expression, first.expression)
    # a tampered encoder file is refused on a cache hit too (its identity changed: re-hashed)
    weights = bundle.file(bundle.encoder_weights)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="encoder weights"):
        run_inference(cmu_svs, bundle, settings)


def test_a_damaged_fold_fails_before_any_tile_is_encoded(cmu_svs, demo_bundle, monkeypatch, tmp_path):
    # a copy of the generated weights (the cache the bundle reads) with one byte of fold 0 changed
    bundle = dataclasses.replace(demo_bundle, weights_cache=tmp_path / "weights")
    shutil.copytree(demo_bundle.weights_cache, bundle.weights_cache)
    fold = bundle.file(bundle.folds[0].weights)
    data = bytearray(fold.read_bytes())
    data[-1] ^= 0xFF
    fold.write_bytes(bytes(data))

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was loaded before the folds were verified")

    monkeypatch.setattr(inference, "load_bundle_encoder", no_encoder)
    with pytest.raises(ChecksumError, match="sha256"):
        run_inference(cmu_svs, bundle, Settings())


def test_predict_command_writes_all_genes_and_reuses_the_cache(cli, cmu_svs, tmp_path):
    out = tmp_path / "expression.csv"
    args = ["predict", str(cmu_svs), "--bundle", "sequoia-brca-demo", "--out", str(out)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--quiet"]
    first = cli(args)
    assert first.exit_code == 0, first.output
    table = pd.read_csv(out)
    assert len(table) == 1
    assert list(table.columns[:6]) == META
    genes = table.columns[6:]
    assert len(genes) == 20820
    values = table[genes].to_numpy(dtype=float)
    assert np.isfinite(values).all()
    assert table.loc[0, "slide_sha256"] == CMU_SHA256 and not table.loc[0, "bundle_trained"]
    assert "NOT TRAINED" in first.stdout and "QC warning" in first.stdout

    parquet = tmp_path / "expression.parquet"
    second = cli([*args[:5], str(parquet), *args[6:], "--genes", "ESR1,ERBB2"])
    assert second.exit_code == 0, second.output
    assert "features from cache" in second.stdout
    row = pd.read_parquet(parquet)
    assert list(row.columns) == [*META, "ESR1", "ERBB2"]
    np.testing.assert_allclose(
        row[["ESR1", "ERBB2"]].to_numpy(float), table[["ESR1", "ERBB2"]].to_numpy(float), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--genes", "ESR1,NOT_A_GENE"], "NOT_A_GENE"),
        (["--genes", "ESR1", "--all-genes"], "exclude each other"),
        (["--device", "tpu" if torch.cuda.is_available() else "cuda"], "device"),
        (["--bundle", "no-such-bundle"], "no bundle named"),
        (["--precision", "fp16"], "'fp16' is not one of 'auto', 'fp32', 'bf16'"),  # refused by the parser
    ],
)
def test_predict_user_errors_are_one_line_and_write_nothing(cli, cmu_svs, tmp_path, extra, message):
    out = tmp_path / "x.csv"
    result = cli(["predict", str(cmu_svs), "--out", str(out), "--no-cache", "-q", *extra])
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_predict_refuses_an_unwritable_output_folder_before_any_work(cli, cmu_svs, tmp_path, monkeypatch):
    def no_inference(*args, **kwargs):
        raise AssertionError("inference ran before the output folder was checked")

    monkeypatch.setattr(inference, "run_prediction", no_inference)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    out = blocker / "results" / "expression.csv"  # no folder can be made under a file
    result = cli(["predict", str(cmu_svs), "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert str(out.parent) in result.stderr and "writable" in result.stderr and ".part" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_write_errors_name_the_users_path_not_the_temporary_file(tmp_path):
    target = tmp_path / "expression.csv"
    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_permission_errors_are_one_neutral_line(capsys):
    @user_errors
    def unreadable() -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/slide.svs")

    with pytest.raises(typer.Exit) as caught:
        unreadable()
    assert caught.value.exit_code == 2
    err = capsys.readouterr().err
    assert err == "error: /data/slide.svs: permission denied. Check the file's permissions.\n"


def test_predict_refuses_unknown_output_type(cli, cmu_svs, tmp_path):
    result = cli(["predict", str(cmu_svs), "--out", str(tmp_path / "x.txt"), "-q"])
    assert result.exit_code == 2 and ".csv or .parquet" in result.stderr


def test_dicom_conversion_predicts_the_same_as_the_svs(cmu_svs, cmu_dicom, demo_bundle):
    svs = run_inference(cmu_svs, demo_bundle, Settings())
    dicom = run_inference(cmu_dicom, demo_bundle, Settings())  # level 0 is pixel-identical (data README)
    np.testing.assert_array_equal(dicom.tile_coords, svs.tile_coords)
    np.testing.assert_array_equal(dicom.tile_features, svs.tile_features)
    np.testing.assert_array_equal(dicom.expression, svs.expression)
    assert dicom.slide_sha256 != svs.slide_sha256


@pytest.mark.parametrize(
    ("slide", "mpp", "mpp_source"),
    [
        ("tcga_svs", 0.5, "user"),  # the file records no pixel size
        ("mosaic_pyramid", None, "tiff-resolution"),  # 2 x 2 copies of CMU: over 100 kept tiles
    ],
)
def test_kmeans_path(slide, mpp, mpp_source, demo_bundle, request):
    result = run_inference(request.getfixturevalue(slide), demo_bundle, Settings(), mpp=mpp)
    assert len(result.kept_indices) >= 100 and result.clusters.method == "kmeans"
    assert result.slide_info.mpp_source == mpp_source
    labels, tiles = result.clusters.labels, result.tile_features.astype(np.float64)
    for row in range(100):
        members = tiles[labels == row]
        if len(members):
            np.testing.assert_allclose(result.cluster_features[row], members.mean(axis=0), atol=1e-5)
        else:
            assert row in result.clusters.filled_rows
    assert result.clusters.n_populated == 100 - len(result.clusters.filled_rows)
    assert np.isfinite(result.expression).all()


def test_precision_auto_follows_the_cpu_and_bf16_is_refused_without_it(cli, cmu_svs, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    out = tmp_path / "x.csv"
    result = cli(["predict", str(cmu_svs), "--out", str(out), "--precision", "bf16", "-q"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and not out.exists()
    assert "no native bfloat16" in result.stderr and "--precision auto or fp32" in result.stderr


@pytest.mark.skipif(not has_native_bf16(torch.device("cpu")), reason="this CPU has no native bf16")
def test_bf16_predictions_are_close_to_fp32_and_cached_apart(cmu_svs, demo_bundle, tmp_path):
    fp32 = run_inference(cmu_svs, demo_bundle, Settings(precision="fp32", cache_dir=tmp_path))
    bf16 = run_inference(cmu_svs, demo_bundle, Settings(precision="bf16", cache_dir=tmp_path))
    assert (fp32.settings_used.precision, bf16.settings_used.precision) == ("fp32", "bf16")
    assert not bf16.cache_hit  # the cache key records the precision: fp32 features never stand in
    assert run_inference(cmu_svs, demo_bundle, Settings(precision="auto", cache_dir=tmp_path)).cache_hit
    # 42 tiles, so no k-means: the difference is the encoder's arithmetic alone
    a, b = fp32.expression.astype(np.float64), bf16.expression.astype(np.float64)
    assert np.corrcoef(a, b)[0, 1] > 0.9999
    assert 0 < np.abs(a - b).max() < 0.05 * a.std()


@pytest.mark.parametrize(("chosen", "largest"), [(None, 32), (5, 5)])
def test_encoder_batches_follow_the_option_else_the_encoder(
    chosen, largest, cmu_svs, demo_bundle, monkeypatch
):
    sizes: list[int] = []
    real = inference.extract_features

    def counting(encoder, batches, indices, **kwargs):  # noqa: ANN001, ANN003, ANN202
        def counted():  # noqa: ANN202
            for batch in batches:
                sizes.append(len(batch.indices))
                yield batch

        return real(encoder, counted(), indices, **kwargs)

    monkeypatch.setattr(inference, "extract_features", counting)
    run_inference(cmu_svs, demo_bundle, Settings(encoder_batch_size=chosen))
    assert demo_bundle.encoder_spec.batch_size == 32
    assert max(sizes) == largest and sum(sizes) >= largest
