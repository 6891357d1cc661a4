#!/usr/bin/env bash
# GPU checks in one go (under 5 minutes on one H200-class GPU), for a machine lent with an accelerator:
#   1. UNI-shaped ViT-L/16 encoder throughput at batch 256 in bf16 on preloaded tiles, with the ratio to the
#      H200 bf16 bound (~6,400 UNI tiles/s: ~990 dense bf16 TFLOP/s / ~155 GFLOP per 224 px ViT-L/16 tile);
#   2. the encoder bench (pipeline vs naive loop) on the demo-slide mosaic with the UNI shape;
#   3. tests/test_cuda.py (GPU features vs the CPU fp32 reference; predict on the GPU);
#   4. an end-to-end `score` of the demo slide on CUDA.
# Usage: bash benches/bench_gpu.sh [PYTHON]   (default: .venv/bin/python, else python3)
# A GPU image without the slide libraries can install them from wheels carried in .whl/:
#   pip download -d .whl tiffslide imagecodecs wsidicom pydicom ...   (on a machine with the index)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -d .whl ] && ! "$PY" -c "import tiffslide, wsidicom" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --find-links .whl -e '.[dev]'
fi
export SEQUOIA_CLINIC_CACHE=${SEQUOIA_CLINIC_CACHE:-$(mktemp -d)}

echo "== 1. UNI-shaped encoder, batch 256, bf16, preloaded tiles"
"$PY" - <<'EOF'
import time

import torch

from sequoia_clinic.encoders import ENCODERS, random_encoder
from sequoia_clinic.settings import Precision

assert torch.cuda.is_available(), "no CUDA device"
encoder = random_encoder(ENCODERS["uni"], seed=0, device="cuda", precision=Precision.BF16)
tiles = torch.randint(0, 256, (256, 224, 224, 3), dtype=torch.uint8).numpy()
for _ in range(3):
    encoder.embed(tiles)  # warm-up (cuDNN/cuBLAS autotuning)
torch.cuda.synchronize()
rounds, start = 10, time.perf_counter()
for _ in range(rounds):
    encoder.embed(tiles)
torch.cuda.synchronize()
rate = rounds * len(tiles) / (time.perf_counter() - start)
print(f"UNI ViT-L/16 bf16 batch 256: {rate:,.0f} tiles/s = {rate / 6400:.0%} of the ~6,400 tiles/s H200 bound")
EOF

echo "== 2. encoder bench (pipeline vs naive loop), UNI shape on 512 tiles"
"$PY" benches/bench_encoder.py --device cuda --batch-size 256 --uni-tiles 512 --repeats 1

echo "== 3. CUDA tests"
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py

echo "== 4. score on CUDA"
out=$(mktemp -d)
/usr/bin/time -f "score on CUDA: wall %e s, peak RSS %M KB" \
  "$PY" -m sequoia_clinic score sequoia_clinic/demo/CMU-1-Small-Region.svs --device cuda --out "$out/cuda"
