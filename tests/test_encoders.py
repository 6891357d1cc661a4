"""Tile encoders: registry shapes, preprocessing vs the reference PIL transform, strict local weights,
and the streaming extractor (order, determinism, error propagation)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms

from sequoia_clinic.encoders.extract import ArrayBatch, array_batches, extract_features
from sequoia_clinic.encoders.model import (
    computes_in_bf16,
    create_network,
    fold_normalisation,
    has_native_bf16,
    load_encoder,
    random_encoder,
)
from sequoia_clinic.encoders.registry import ENCODERS, get_encoder_spec
from sequoia_clinic.errors import ChecksumError, OptionError, WeightsError
from sequoia_clinic.fileio import sha256_file


def _tiles(n: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random RGB tiles (n, 256, 256, 3) uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(t).resize((256, 256), Image.BILINEAR)) for t in coarse])


def _vit_large_parameters() -> int:
    """ViT-L/16 at 224 px without classifier, with LayerScale: counted from the architecture by hand."""
    d, mlp, blocks, tokens = 1024, 4096, 24, 197
    per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d) + 2 * d
    return (3 * 16 * 16 * d + d) + d + tokens * d + blocks * per_block + 2 * d


def test_registry_specs():
    uni = get_encoder_spec("uni")
    assert uni.timm_name == "vit_large_patch16_224"
    assert uni.kwargs() == {
        "img_size": 224,
        "patch_size": 16,
        "init_values": 1e-5,
        "num_classes": 0,
        "dynamic_img_size": True,
    }
    assert (uni.out_dim, uni.input_px) == (1024, 224)
    net = create_network(uni, meta=True)
    assert sum(p.numel() for p in net.parameters()) == _vit_large_parameters()
    assert any(k.endswith("ls1.gamma") for k in net.state_dict())
    assert get_encoder_spec("resnet50").out_dim == 2048
    # tiles per forward pass when --batch-size is not given: UNI's activations are halved at 16
    assert (uni.batch_size, get_encoder_spec("demo-vit").batch_size) == (16, 32)
    assert set(ENCODERS) == {"uni", "resnet50", "demo-vit"}
    with pytest.raises(OptionError, match="Choose one of"):
        get_encoder_spec("uni2-h")


def test_preprocessing_matches_reference_pil_transform():
    encoder = random_encoder(ENCODERS["demo-vit"])
    tiles = _tiles(3)
    reference = transforms.Compose(
        [
            transforms.Resize(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    expected = torch.stack([reference(Image.fromarray(t)) for t in tiles])
    got = encoder.normalise(encoder.resize(torch.from_numpy(tiles)))
    assert got.shape == (3, 3, 224, 224)
    assert got.is_contiguous(memory_format=torch.channels_last)
    # uint8 antialiased resize matches PIL to within one grey level (1/255/std in normalised units)
    diff = (got - expected).abs()
    assert diff.max() <= 1.0 / 255 / 0.224 + 1e-5
    assert (diff > 1e-4).float().mean() < 0.01


def test_folded_normalisation_gives_the_network_on_normalised_pixels():
    """The ViT's features from pixels - 128 with the normalisation folded into the patch embedding equal
    the unchanged network's on torchvision-normalised pixels; the module's own weights are untouched."""
    encoder = random_encoder(ENCODERS["demo-vit"], seed=3)
    assert encoder.spec.input_conv == "patch_embed.proj"
    tiles = torch.from_numpy(_tiles(4, seed=5))
    with torch.inference_mode():
        resized = encoder.resize(tiles).float() / 255.0
        normalised = transforms.Normalize(encoder.spec.mean, encoder.spec.std)(resized)
        expected = encoder.network(normalised)
        network_input = encoder.preprocess(tiles)
    assert network_input.dtype == torch.float32  # fp32 encoder
    assert float(network_input.min()) >= -128 and float(network_input.max()) <= 127
    torch.testing.assert_close(encoder.embed(tiles.numpy()), expected, atol=2e-5, rtol=1e-4)
    fresh = random_encoder(ENCODERS["demo-vit"], seed=3).network.state_dict()
    for key, value in encoder.network.state_dict().items():
        assert torch.equal(value, fresh[key]), key
    with pytest.raises(ValueError, match="pads its input"):
        fold_normalisation(create_network(ENCODERS["resnet50"]), "conv1", encoder._scale, encoder._shift)


def test_embed_is_deterministic_and_batch_independent():
    encoder = random_encoder(ENCODERS["demo-vit"], seed=1)
    tiles = _tiles(6, seed=2)
    a = encoder.embed(tiles)
    b = encoder.embed(tiles)
    assert a.shape == (6, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    single = torch.cat([encoder.embed(tiles[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(single, a, atol=1e-5, rtol=1e-5)
    assert float(a.std(dim=0).mean()) > 1e-3  # features depend on the tile
    with pytest.raises(ValueError, match="uint8"):
        encoder.embed(tiles.astype(np.float32))


def test_streaming_extractor_keeps_requested_order():
    encoder = random_encoder(ENCODERS["demo-vit"], seed=1)
    tiles = _tiles(10, seed=3)
    order = np.array([7, 2, 9, 0, 4, 1, 8, 3, 6, 5])

    def batches():
        for lo in range(0, 10, 3):  # arrive in the requested order, several per batch
            idx = order[lo : lo + 3]
            yield ArrayBatch(indices=idx, pixels=tiles[idx])

    calls = []
    features, stats = extract_features(
        encoder, batches(), order, queue_size=2, progress=lambda s, d, t: calls.append(d)
    )
    expected = encoder.embed(tiles[order]).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5)
    assert stats.n_tiles == 10 and stats.tiles_per_second > 0
    assert calls[0] == 0 and calls[-1] == 10
    again, _ = extract_features(encoder, array_batches(tiles, 4), np.arange(10))
    np.testing.assert_array_equal(again[order], extract_features(encoder, batches(), order)[0])
    in_turn, _ = extract_features(encoder, batches(), order, overlap=False)  # the CPU's way: no loader
    np.testing.assert_array_equal(in_turn, extract_features(encoder, batches(), order)[0])


def test_loader_errors_reach_the_caller():
    encoder = random_encoder(ENCODERS["demo-vit"])
    tiles = _tiles(2)

    def broken():
        yield ArrayBatch(indices=np.array([0]), pixels=tiles[:1])
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        extract_features(encoder, broken(), np.array([0, 1]))
    with pytest.raises(RuntimeError, match="1 of 2"):
        extract_features(encoder, array_batches(tiles[:1], 1), np.array([0, 1]))


def test_bf16_rule_is_known_before_the_encoder_is_loaded(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not computes_in_bf16(cuda)  # e.g. a V100: fp32, and the feature cache key must say so
    with pytest.raises(OptionError, match="no native bfloat16"):
        computes_in_bf16(cuda, "bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert computes_in_bf16(cuda) and computes_in_bf16(cuda, "bf16") and not computes_in_bf16(cuda, "fp32")
    with pytest.raises(OptionError, match="unknown precision"):
        computes_in_bf16(cuda, "fp16")
    assert random_encoder(ENCODERS["demo-vit"]).uses_bf16 is False  # tests and benches: fp32 unless asked


def test_cpu_bf16_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not has_native_bf16(cpu) and not computes_in_bf16(cpu)  # auto: fp32 on a CPU without it
    with pytest.raises(OptionError, match="no native bfloat16"):
        computes_in_bf16(cpu, "bf16")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # e.g. Sapphire Rapids
    assert computes_in_bf16(cpu) and computes_in_bf16(cpu, "bf16") and not computes_in_bf16(cpu, "fp32")


@pytest.mark.skipif(not has_native_bf16(torch.device("cpu")), reason="this CPU has no native bf16")
def test_cpu_bf16_is_deterministic_and_close_to_fp32():
    tiles = _tiles(6)
    fp32 = random_encoder(ENCODERS["demo-vit"], seed=1).embed(tiles).numpy()
    bf16 = random_encoder(ENCODERS["demo-vit"], seed=1, precision="bf16")
    assert bf16.uses_bf16
    first, second = bf16.embed(tiles).numpy(), bf16.embed(tiles).numpy()
    np.testing.assert_array_equal(first, second)  # deterministic for a fixed input
    cosine = (first * fp32).sum(1) / np.linalg.norm(first, axis=1) / np.linalg.norm(fp32, axis=1)
    assert first.dtype == np.float32 and cosine.min() > 0.999
    assert 0 < np.abs(first - fp32).max() < 0.05 * np.abs(fp32).max()  # really bf16, and close


def test_a_failure_stops_the_loader_before_returning():
    encoder = random_encoder(ENCODERS["demo-vit"])
    tile = _tiles(1)
    read, closed = [], []

    def slow_reader():
        try:
            for i in range(100):
                time.sleep(0.01)
                read.append(i)
                yield ArrayBatch(indices=np.array([i]), pixels=tile)
        finally:
            closed.append(True)  # the reader was closed (as the slide may be right after)

    def broken_forward(prepared):
        raise RuntimeError("encoder failed")

    encoder.forward = broken_forward
    with pytest.raises(RuntimeError, match="encoder failed"):
        extract_features(encoder, slow_reader(), np.arange(100), queue_size=1)
    assert closed == [True] and len(read) <= 5  # stopped after at most a few batches, then joined
    assert not any(t.name == "tile-loader" and t.is_alive() for t in threading.enumerate())


def test_local_weights_load_strictly_in_both_formats(tmp_path):
    spec = ENCODERS["demo-vit"]
    source = random_encoder(spec, seed=4)
    state = source.network.state_dict()
    st_path, bin_path = tmp_path / "enc.safetensors", tmp_path / "pytorch_model.bin"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st_path))
    torch.save(state, bin_path)
    tiles = _tiles(2)
    for path in (st_path, bin_path):
        loaded = load_encoder(spec, path, sha256_file(path), precision="fp32")
        assert loaded.weights_sha256 == sha256_file(path)
        torch.testing.assert_close(loaded.embed(tiles), source.embed(tiles), atol=1e-5, rtol=1e-5)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        load_encoder(spec, st_path, "f" * 64)
    bad = dict(state)
    bad.pop("norm.weight")
    torch.save(bad, tmp_path / "bad.bin")
    with pytest.raises(WeightsError, match="missing 1 tensors: norm.weight"):
        load_encoder(spec, tmp_path / "bad.bin", None)
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_encoder(spec, tmp_path / "junk.bin", None)


def test_resnet50_drops_the_classifier_of_an_imagenet_checkpoint(tmp_path):
    import timm

    full = timm.create_model("resnet50", pretrained=False)  # with its 1000-class fc, as torchvision files are
    path = tmp_path / "resnet50.bin"
    torch.save(full.state_dict(), path)
    encoder = load_encoder(ENCODERS["resnet50"], path, None, precision="fp32")
    tiles = _tiles(1)
    out = encoder.embed(tiles)
    assert out.shape == (1, 2048)
    with torch.inference_mode():
        x = (
            torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
            - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        ) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        expected = full.eval().forward_head(full.forward_features(x), pre_logits=True)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_uni_shaped_pytorch_model_bin_loads_strict(tmp_path):
    spec = ENCODERS["uni"]
    torch.manual_seed(0)
    reference = create_network(spec)
    path = tmp_path / "pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    encoder = load_encoder(spec, path, sha256_file(path), precision="fp32")
    loaded = encoder.network.state_dict()
    assert loaded.keys() == reference.state_dict().keys()
    assert len(loaded) == 4 + 24 * 14 + 2  # cls, pos, patch w/b; 14 per block (LayerScale incl.); norm
    for key in ("blocks.23.ls2.gamma", "pos_embed", "patch_embed.proj.weight"):
        assert torch.equal(loaded[key], reference.state_dict()[key])
    assert encoder.out_dim == 1024 and encoder.network.embed_dim == 1024
