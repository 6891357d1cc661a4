"""Seeded sampling of the tiles that feed the encoder (SEQUOIA: at most 4,000 per slide, seed 99).

The reference feature script draws ``random.sample(keys, 4000)`` with Python's ``random`` seeded 99 when a
slide has more tiles than the cap. We do the same with a private ``random.Random(seed)`` (no global state)
over the kept tile indices in grid order, and keep the sampled order: k-means++ initialisation depends on
row order, so the order is part of the recorded, reproducible input.
"""

from __future__ import annotations

import random

import numpy as np


def sample_tiles(kept_indices: np.ndarray, max_tiles: int, seed: int) -> np.ndarray:
    """At most ``max_tiles`` of ``kept_indices``: all of them (in order) when they fit, else a seeded sample."""
    kept = [int(i) for i in np.asarray(kept_indices).ravel()]
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    if len(kept) <= max_tiles:
        return np.asarray(kept, dtype=np.int64)
    return np.asarray(random.Random(seed).sample(kept, max_tiles), dtype=np.int64)
