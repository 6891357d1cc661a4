"""The CUDA path (pinned uploads, on-GPU resizing, bf16 autocast): skipped where no GPU is visible.

Run on a GPU machine with ``pytest tests/test_cuda.py``; the CPU float32 encoder is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sequoia_clinic.encoders.extract import array_batches, extract_features
from sequoia_clinic.encoders.model import random_encoder
from sequoia_clinic.encoders.registry import ENCODERS
from sequoia_clinic.pipeline.predict import PredictRequest, load_folds, run_prediction
from sequoia_clinic.settings import Device, Precision, Settings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _tiles(n: int) -> np.ndarray:
    coarse = np.random.default_rng(3).integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(t).resize((256, 256), Image.BILINEAR)) for t in coarse])


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_gpu_features_match_the_cpu_reference(precision):
    tiles = _tiles(40)
    reference = random_encoder(ENCODERS["demo-vit"], seed=2).embed(tiles).numpy()
    gpu = random_encoder(ENCODERS["demo-vit"], seed=2, device="cuda", precision=precision)
    features, _ = extract_features(gpu, array_batches(tiles, 16), np.arange(len(tiles)))
    assert features.dtype == np.float32 and np.isfinite(features).all()
    # fp32 on the GPU may use TF32 convolutions; bf16 keeps ~3 significant digits
    assert _min_cosine(features, reference) > (0.9999 if precision == "fp32" else 0.999)


def test_predict_on_the_gpu(cmu_svs, demo_bundle):
    bundle = demo_bundle
    runs = []
    for settings in (Settings(precision=Precision.FP32), Settings(device=Device.CUDA)):
        runs.append(run_prediction(PredictRequest(cmu_svs), bundle, load_folds(bundle, settings), settings))
    cpu, gpu = runs
    assert gpu.device.startswith("cuda") and gpu.expression.shape == (20820,)
    assert np.corrcoef(cpu.expression, gpu.expression)[0, 1] > 0.999
