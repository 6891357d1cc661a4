"""Deterministic, untrained weights for demo bundles: generated on first use, then checksum-verified.

The demo bundle does not commit its ~14 MB of weight files. Instead each manifest entry names a recipe and
a seed, and records the sha256 of the file the recipe produces. The recipe ``pcg64-lecun-uniform-v1``:

* walks the module's state dict in sorted key order with one ``numpy.random.Generator(PCG64(seed))``
  (numpy's bit-stable ``random()`` stream, not torch's RNG, whose streams are not promised across versions);
* 1-D tensors named ``*bias`` → 0, other 1-D tensors (LayerNorm weights, LayerScale gammas) → 1;
* ``cls_token`` / ``pos_embed`` / ``pos_emb1D`` → uniform with standard deviation 0.02;
* every other tensor → uniform(±sqrt(3 / fan_in)) (unit-variance "LeCun" scaling), fan_in = prod(shape[1:]);
* float64 draws are rounded to float32 and written with safetensors (sorted, deterministic header).

If a different numpy/safetensors ever produced other bytes, the checksum check refuses the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from math import prod, sqrt
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from safetensors.torch import save_file

from sequoia_clinic.errors import ChecksumError
from sequoia_clinic.fileio import atomic_path, sha256_file

_EMBEDDINGS = ("cls_token", "pos_embed", "pos_emb1D")


def _pcg64_lecun_uniform(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    out: dict[str, np.ndarray] = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        leaf = key.rsplit(".", 1)[-1]
        if len(shape) == 1 and leaf == "bias":
            out[key] = np.zeros(shape, dtype=np.float32)
        elif len(shape) == 1:
            out[key] = np.ones(shape, dtype=np.float32)
        else:
            half_width = 0.02 * sqrt(3.0) if leaf in _EMBEDDINGS else sqrt(3.0 / prod(shape[1:]))
            out[key] = ((rng.random(shape) * 2.0 - 1.0) * half_width).astype(np.float32)
    return out


RECIPES: Mapping[str, Callable[[Mapping[str, tuple[int, ...]], int], dict[str, np.ndarray]]] = (
    MappingProxyType({"pcg64-lecun-uniform-v1": _pcg64_lecun_uniform})
)


def generate_state_dict(module: torch.nn.Module, recipe: str, seed: int) -> dict[str, torch.Tensor]:
    """Weights for every tensor of ``module``'s state dict (the module may live on the meta device)."""
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    arrays = RECIPES[recipe](shapes, seed)
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def write_generated(module: torch.nn.Module, recipe: str, seed: int, target: Path, sha256: str | None) -> str:
    """Generate, write atomically, and (when ``sha256`` is given) verify ``target``; returns its sha256."""
    state = generate_state_dict(module, recipe, seed)
    # One metadata key only: safetensors writes metadata from a hash map, so several keys come out in
    # a random order and the file bytes (and sha256) would change from run to run.
    metadata = {"generator": f"{recipe} seed={seed} (untrained)"}
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata=metadata)
        digest = sha256_file(tmp)
        if sha256 is not None and digest != sha256:
            raise ChecksumError(
                f"generated weights ({recipe}, seed {seed}) have sha256 {digest[:12]}…, "
                f"the manifest records {sha256[:12]}…",
                target,
                fix="This numpy/safetensors version generates different bytes; report it, or use a bundle "
                "with committed weight files.",
            )
    return digest
