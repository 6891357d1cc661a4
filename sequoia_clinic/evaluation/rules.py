"""The "well predicted" rules applied to the per-gene statistics.

* ``sequoia`` reproduces the reference's rule (sequoia-pub ``evaluation/evaluate_model.py``) exactly: NaN r
  is set to 0 and NaN p to 1, then a gene passes when r > 0, Pearson p < 0.05, RMSE < RMSE of the untrained
  baseline, r > r of the untrained baseline, Steiger p < 0.05 and BH q of the Steiger p < 0.2. As in the
  reference, the Steiger p is the one-tailed p on |t| and its BH runs over every evaluated gene (the signed
  p gives the same pass/fail for each gene, since r > r_baseline is required, but other BH q values).
* ``strict`` (the default for reports): r ≥ 0.3 and BH q of the two-sided Pearson p < 0.05 (NaN p counted
  as 1). It needs no baseline.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class Rule(StrEnum):
    SEQUOIA = "sequoia"
    STRICT = "strict"


RULE_TEXT = {
    Rule.SEQUOIA: (
        "r > 0, Pearson p < 0.05, RMSE < untrained RMSE, r > untrained r, Steiger p < 0.05 (one-tailed on |t|), "
        "BH q(Steiger p) < 0.2 (sequoia-pub evaluate_model.py)"
    ),
    Rule.STRICT: "r >= 0.3 and BH q(two-sided Pearson p) < 0.05",
}
STRICT_MIN_R = 0.3
STRICT_MAX_Q = 0.05


def nan_to(values: np.ndarray, fill: float) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).copy()
    out[~np.isfinite(out)] = fill
    return out


def passes_sequoia(
    r: np.ndarray,
    p: np.ndarray,
    rmse: np.ndarray,
    rmse_baseline: np.ndarray,
    r_baseline: np.ndarray,
    steiger_p_reference: np.ndarray,
    steiger_q_reference: np.ndarray,
) -> np.ndarray:
    """The reference rule, with its NaN conventions (r and baseline r → 0, p → 1)."""
    r0, rb = nan_to(r, 0.0), nan_to(r_baseline, 0.0)
    return (
        (r0 > 0)
        & (nan_to(p, 1.0) < 0.05)
        & (np.asarray(rmse) < np.asarray(rmse_baseline))
        & (r0 > rb)
        & (nan_to(steiger_p_reference, 1.0) < 0.05)
        & (nan_to(steiger_q_reference, 1.0) < 0.2)
    )


def passes_strict(r: np.ndarray, pearson_q: np.ndarray) -> np.ndarray:
    return (nan_to(r, 0.0) >= STRICT_MIN_R) & (nan_to(pearson_q, 1.0) < STRICT_MAX_Q)
