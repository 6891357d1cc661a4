"""Per-gene statistics, vectorised over genes: Pearson r and p, RMSE, Steiger's test, Benjamini–Hochberg.

Every function takes (units × genes) float arrays and returns one value per gene, in float64.

* :func:`pearson` — r and the two-sided p of ``scipy.stats.pearsonr`` (the exact null distribution of r
  for normal data: p = 2·I_{(1-|r|)/2}(n/2-1, n/2-1), the regularised incomplete beta function). A gene
  whose measured or predicted values are constant has r = NaN and p = NaN here; the rules decide what
  that means (:mod:`.rules`).
* :func:`steiger` — Williams' t for two dependent correlations sharing one variable, in the form given by
  Steiger (1980, Psychological Bulletin 87:245, eq. 7): with xy = r(measured, model), xz = r(measured,
  baseline), yz = r(model, baseline) and n units,

      det = 1 - xy² - xz² - yz² + 2·xy·xz·yz,   mean = (xy + xz) / 2,
      t   = (xy - xz) · sqrt( (n-1)(1+yz) / ( 2·(n-1)/(n-3)·det + mean²·(1-yz)³ ) ),  df = n - 3.

  The **signed** one-tailed p (H1: xy > xz) is ``t.sf(t, n-3)``; the reference code takes it on |t|
  (``1 - t.cdf(|t|)``), which loses the direction — :func:`steiger` returns both.
* :func:`benjamini_hochberg` — step-up BH adjusted p-values (q), NaN p-values left NaN and not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as sps


@dataclass(frozen=True)
class SteigerResult:
    t: np.ndarray  # signed Williams/Steiger t per gene (positive: the model correlates better)
    p_signed: np.ndarray  # one-tailed p for H1: r(measured, model) > r(measured, baseline)
    p_abs: np.ndarray  # the reference's one-tailed p on |t| (direction lost)


def _as_2d(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError("expected a (units, genes) array")
    return array


def correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r per column of two (n, genes) arrays; NaN where either column is constant.

    Computed like scipy: centre, divide each column by its norm, take the dot product, clip to [-1, 1].
    """
    a, b = _as_2d(x), _as_2d(y)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    am = a - a.mean(axis=0)
    bm = b - b.mean(axis=0)
    na = np.linalg.norm(am, axis=0)
    nb = np.linalg.norm(bm, axis=0)
    # Constant within rounding (scipy's own test: the norm is tiny relative to the mean): NaN, not noise.
    tiny_a = na <= 1e-13 * np.abs(a.mean(axis=0)) * np.sqrt(len(a)) + 1e-300
    tiny_b = nb <= 1e-13 * np.abs(b.mean(axis=0)) * np.sqrt(len(b)) + 1e-300
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.einsum("ij,ij->j", am / na, bm / nb)
    r = np.clip(r, -1.0, 1.0)
    r[tiny_a | tiny_b] = np.nan
    return r


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r, two-sided p) per gene, equal to ``scipy.stats.pearsonr`` column by column (n ≥ 3)."""
    r = correlation(x, y)
    n = _as_2d(x).shape[0]
    if n < 3:
        raise ValueError("Pearson p needs at least 3 units")
    ab = n / 2.0 - 1.0
    with np.errstate(invalid="ignore"):
        p = 2.0 * special.betainc(ab, ab, 0.5 * (1.0 - np.abs(r)))
    p = np.where(np.isnan(r), np.nan, np.clip(p, 0.0, 1.0))
    return r, p


def rmse(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Root mean squared error per gene."""
    a, b = _as_2d(predicted), _as_2d(measured)
    return np.sqrt(np.mean((a - b) ** 2, axis=0))


def steiger(xy: np.ndarray, xz: np.ndarray, yz: np.ndarray, n: int) -> SteigerResult:
    """Williams' t (Steiger 1980) for H1: xy > xz, with the signed and the reference (|t|) one-tailed p."""
    if n < 4:
        raise ValueError("Steiger's test needs at least 4 units")
    xy, xz, yz = (np.asarray(v, dtype=np.float64) for v in (xy, xz, yz))
    d = xy - xz
    det = 1.0 - xy**2 - xz**2 - yz**2 + 2.0 * xy * xz * yz
    mean = (xy + xz) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d * np.sqrt((n - 1) * (1.0 + yz) / ((2.0 * (n - 1) / (n - 3)) * det + mean**2 * (1.0 - yz) ** 3))
    df = n - 3
    return SteigerResult(t=t, p_signed=sps.t.sf(t, df), p_abs=sps.t.sf(np.abs(t), df))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values: q_(i) = min_{j ≥ i} (m / j) · p_(j), capped at 1; m counts the finite p only."""
    values = np.asarray(p, dtype=np.float64)
    q = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    m = int(finite.sum())
    if m == 0:
        return q
    ordered_index = np.argsort(values[finite], kind="mergesort")
    ordered = values[finite][ordered_index]
    scaled = ordered * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[ordered_index] = np.minimum(adjusted, 1.0)
    q[finite] = out
    return q
