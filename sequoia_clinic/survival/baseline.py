"""The Breslow baseline survival S0(t) as a step function, evaluated at given times (numpy only).

Applying a risk model needs only this; fitting one (``cox.py``) needs scikit-survival, which a ``score``
run never imports.
"""

from __future__ import annotations

import numpy as np


def baseline_at(times: np.ndarray, survival: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Evaluate a right-continuous step function S0 at ``at``: 1 before the first time, NaN after the last.

    ``times`` are all distinct observed times (events and censorings), so the last one is the end of
    follow-up: the survival curve is unknown after it and is not carried forward.
    """
    at = np.asarray(at, dtype=float)
    index = np.searchsorted(times, at, side="right") - 1
    value = np.where(index >= 0, survival[np.clip(index, 0, None)], 1.0)
    return np.where(at > times[-1], np.nan, value) if len(times) else np.full(at.shape, np.nan)
