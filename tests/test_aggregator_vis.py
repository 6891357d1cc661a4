"""ViS: published checkpoint layout (strict load, 1,013 tensors, 53,762,388 parameters) and an independent
numpy re-computation of the SummaryMixing equations; HE2RNA against a numpy top-k computation."""

from __future__ import annotations

import gc
import json
import math
import weakref

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sequoia_clinic.aggregator import ensemble as ensemble_module
from sequoia_clinic.aggregator.configs import He2rnaConfig, VisConfig
from sequoia_clinic.aggregator.ensemble import FoldEnsemble, load_ensemble, load_fold
from sequoia_clinic.aggregator.he2rna import build_he2rna
from sequoia_clinic.aggregator.vis import build_vis
from sequoia_clinic.errors import BundleError, ChecksumError, WeightsError
from sequoia_clinic.fileio import sha256_file

# The published configuration (config.json of gevaertlab/sequoia-*), without its `device` field.
PUBLISHED_CONFIG: dict[str, int] = {
    "depth": 6,
    "dimensions_c": 64,
    "dimensions_f": 64,
    "dimensions_s": 64,
    "input_dim": 1024,
    "nheads": 16,
    "num_clusters": 100,
    "num_outputs": 20820,
}


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Random values for every tensor, LayerNorm weights/biases included (so they matter in the check)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in model.state_dict().items():
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)


def test_published_checkpoint_layout_loads_strict(tmp_path):
    torch.manual_seed(0)
    model = build_vis(VisConfig(**PUBLISHED_CONFIG))
    state = model.state_dict()
    assert len(state) == 1013
    assert sum(t.numel() for t in state.values()) == 53_762_388
    # 6 blocks x (16 heads x 10 tensors + projection 2 + feed-forward 6) + pos_emb1D + head 4 = 1013
    assert len(state) == 6 * (16 * 10 + 2 + 6) + 1 + 4
    assert tuple(state["linear_head.1.weight"].shape) == (20820, 1024)
    assert tuple(state["transformer.layers.5.0.mixers.15.c.weight"].shape) == (64, 128)
    assert tuple(state["transformer.layers.0.1.net.3.weight"].shape) == (1024, 1024)

    folder = tmp_path / "sequoia-brca-0"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**PUBLISHED_CONFIG, "device": "cuda:0"}))
    config = VisConfig.from_dict(json.loads((folder / "config.json").read_text()))
    loaded = load_fold("vis", config, folder / "model.safetensors", sha256_file(folder / "model.safetensors"))

    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == state.keys()
    assert all(torch.equal(loaded_state[k], state[k]) for k in state)
    x = torch.randn(1, 100, 1024, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = loaded(x)
    assert got.shape == (1, 20820)
    assert torch.isfinite(got).all()


def test_strict_load_refuses_missing_extra_and_misshaped_tensors(tmp_path):
    config = VisConfig(
        num_outputs=5,
        input_dim=8,
        depth=1,
        nheads=2,
        dimensions_f=4,
        dimensions_s=4,
        dimensions_c=4,
        num_clusters=3,
    )
    state = build_vis(config).state_dict()
    cases = {
        "missing": {k: v for k, v in state.items() if k != "pos_emb1D"},
        "extra": {**state, "to_latent.weight": torch.zeros(1)},
        "shape": {**state, "pos_emb1D": torch.zeros(4, 8)},
    }
    for name, bad in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(bad, str(path))
        with pytest.raises(WeightsError, match=name if name != "extra" else "unexpected"):
            load_fold("vis", config, path, None)
    good = tmp_path / "good.safetensors"
    save_file(state, str(good))
    with pytest.raises(ChecksumError):
        load_fold("vis", config, good, "0" * 64)


def test_config_ignores_device_and_refuses_unknown_or_missing_fields():
    config = VisConfig.from_dict({**PUBLISHED_CONFIG, "device": "cuda:0"})
    assert config.to_dict() == PUBLISHED_CONFIG
    with pytest.raises(BundleError, match="unknown"):
        VisConfig.from_dict({**PUBLISHED_CONFIG, "heads": 3})
    with pytest.raises(BundleError, match="lacks 'depth'"):
        VisConfig.from_dict({k: v for k, v in PUBLISHED_CONFIG.items() if k != "depth"})
    with pytest.raises(BundleError, match="positive integer"):
        VisConfig.from_dict({**PUBLISHED_CONFIG, "depth": "6"})


# ---- independent numpy re-computation of the equations (float64) -------------------------------------


def _gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _numpy_vis(p: dict[str, np.ndarray], x: np.ndarray, depth: int, nheads: int) -> np.ndarray:
    """ŷ = W_o LN(mean_i h_i) + b_o after `depth` blocks of SummaryMixing + feed-forward on X + P."""
    h = x + p["pos_emb1D"]
    for i in range(depth):
        outputs = []
        for j in range(nheads):
            m = f"transformer.layers.{i}.0.mixers.{j}."
            local = _gelu(
                _layer_norm(
                    h @ p[m + "f.weight"].T + p[m + "f.bias"],
                    p[m + "local_norm.weight"],
                    p[m + "local_norm.bias"],
                )
            )
            s_mean = (h @ p[m + "s.weight"].T + p[m + "s.bias"]).mean(axis=0)
            summary = _gelu(_layer_norm(s_mean, p[m + "summary_norm.weight"], p[m + "summary_norm.bias"]))
            joined = np.concatenate([local, np.broadcast_to(summary, (h.shape[0], summary.shape[0]))], axis=1)
            outputs.append(_gelu(joined @ p[m + "c.weight"].T + p[m + "c.bias"]))
        proj = f"transformer.layers.{i}.0.projection."
        h = np.concatenate(outputs, axis=1) @ p[proj + "weight"].T + p[proj + "bias"] + h
        ff = f"transformer.layers.{i}.1.net."
        z = _layer_norm(h, p[ff + "0.weight"], p[ff + "0.bias"])
        z = _gelu(z @ p[ff + "1.weight"].T + p[ff + "1.bias"])
        h = z @ p[ff + "3.weight"].T + p[ff + "3.bias"] + h
    pooled = _layer_norm(h.mean(axis=0), p["linear_head.0.weight"], p["linear_head.0.bias"])
    return pooled @ p["linear_head.1.weight"].T + p["linear_head.1.bias"]


def test_vis_forward_matches_numpy_summary_mixing():
    config = VisConfig(
        num_outputs=11,
        input_dim=24,
        depth=2,
        nheads=3,
        dimensions_f=8,
        dimensions_s=6,
        dimensions_c=8,
        num_clusters=7,
    )
    model = build_vis(config)
    _randomise(model, seed=3)
    params = {k: v.double().numpy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(4).normal(size=(2, 7, 24))
    with torch.inference_mode():
        got = model(torch.from_numpy(x).float()).numpy()
    expected = np.stack([_numpy_vis(params, x[b], config.depth, config.nheads) for b in range(2)])
    assert got.shape == (2, 11)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def _small_folds(num_outputs: int, seeds: tuple[int, ...]) -> tuple[VisConfig, list[torch.nn.Module]]:
    """A one-block ViS config over 5 x 8 tokens and one randomised model per seed."""
    config = VisConfig(
        num_outputs=num_outputs,
        input_dim=8,
        depth=1,
        nheads=2,
        dimensions_f=4,
        dimensions_s=4,
        dimensions_c=4,
        num_clusters=5,
    )
    models = []
    for seed in seeds:
        m = build_vis(config)
        _randomise(m, seed)
        models.append(m)
    return config, models


def test_fold_ensemble_is_the_mean_of_folds():
    config, models = _small_folds(4, (1, 2, 3))
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    per_fold, mean = FoldEnsemble("vis", config, models, torch.device("cpu")).predict(x)
    with torch.inference_mode():
        each = [m(torch.from_numpy(x)[None]).numpy()[0] for m in models]
    np.testing.assert_allclose(per_fold[:, 0], np.stack(each), atol=1e-6)
    np.testing.assert_allclose(mean[0], np.mean(each, axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="non-finite"):
        FoldEnsemble("vis", config, models, torch.device("cpu")).predict(np.full((5, 8), np.nan, np.float32))


def test_deferred_folds_are_checked_at_once_and_loaded_at_the_first_prediction(tmp_path):
    config, models = _small_folds(6, (1, 2, 9))
    folds = []
    for seed, m in zip((1, 2), models[:2], strict=True):
        path = tmp_path / f"fold-{seed}.safetensors"
        save_file(m.state_dict(), str(path))
        folds.append((path, sha256_file(path)))
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    eager = load_ensemble("vis", config, folds, torch.device("cpu"))
    deferred = load_ensemble("vis", config, folds, torch.device("cpu"), deferred=True)
    assert deferred.models == [] and len(deferred.deferred) == 2  # nothing read yet
    np.testing.assert_array_equal(deferred.predict(x)[0], eager.predict(x)[0])
    assert len(deferred.models) == 2 and deferred.deferred == ()
    with pytest.raises(ChecksumError):  # a wrong file is refused when listed, before any slide work
        load_ensemble("vis", config, [(folds[0][0], "0" * 64)], torch.device("cpu"), deferred=True)
    # a file replaced between the check and the first prediction is checked again, and refused
    later = load_ensemble("vis", config, folds, torch.device("cpu"), deferred=True)
    save_file(models[2].state_dict(), str(folds[1][0]))
    with pytest.raises(ChecksumError):
        later.predict(x)


def test_folds_not_kept_are_read_run_and_dropped_one_at_a_time(tmp_path, monkeypatch):
    """``predict(keep=False)``: the same outputs as the folds run one by one, never two folds alive at once,
    and the ensemble stays deferred (a later call reads the files again)."""
    config, models = _small_folds(6, (3, 4, 5))
    folds = []
    for i, m in enumerate(models):
        path = tmp_path / f"fold-{i}.safetensors"
        save_file(m.state_dict(), str(path))
        folds.append((path, sha256_file(path)))
    alive: weakref.WeakSet = weakref.WeakSet()
    alive_at_each_read = []
    real_load = ensemble_module.load_fold

    def counting_load(*args, **kwargs):
        gc.collect()
        alive_at_each_read.append(len(alive))
        model = real_load(*args, **kwargs)
        alive.add(model)
        return model

    monkeypatch.setattr(ensemble_module, "load_fold", counting_load)
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    streamed = load_ensemble("vis", config, folds, torch.device("cpu"), deferred=True)
    per_fold, mean = streamed.predict(x, keep=False)
    with torch.inference_mode():
        each = np.stack([m(torch.from_numpy(x)[None]).numpy()[0] for m in models])
    np.testing.assert_allclose(per_fold[:, 0], each, atol=1e-6)
    np.testing.assert_allclose(mean[0], each.astype(np.float64).mean(axis=0), atol=1e-6)
    assert alive_at_each_read == [0, 0, 0]
    assert streamed.models == [] and len(streamed.deferred) == 3
    streamed.predict(x)  # kept: all three read at once, as before
    assert alive_at_each_read == [0, 0, 0, 0, 1, 2] and len(streamed.models) == 3


def test_he2rna_matches_numpy_topk_mean():
    config = He2rnaConfig(input_dim=6, output_dim=3, layers=(5,), ks=(1, 2, 4), num_clusters=4)
    model = build_he2rna(config)
    _randomise(model, seed=5)
    assert sorted(model.state_dict()) == ["conv0.bias", "conv0.weight", "conv1.bias", "conv1.weight"]
    x = np.random.default_rng(6).normal(size=(4, 6))
    x[2] = -np.abs(x[2])  # a token with no positive feature is masked out
    p = {k: v.double().numpy() for k, v in model.state_dict().items()}
    hidden = np.maximum(x @ p["conv0.weight"][:, :, 0].T + p["conv0.bias"], 0)
    scores = (hidden @ p["conv1.weight"][:, :, 0].T + p["conv1.bias"]).T  # (genes, tokens)
    mask = (x.max(axis=1) > 0).astype(float)
    scores = scores * mask
    expected = np.zeros(3)
    for k in config.ks:
        top = -np.sort(-scores, axis=1)[:, :k]
        expected += (top * mask[:k]).sum(axis=1) / mask[:k].sum() / len(config.ks)
    with torch.inference_mode():
        got = model(torch.from_numpy(x).float()[None]).numpy()[0]
    np.testing.assert_allclose(got, np.maximum(expected, 0), atol=1e-5)
