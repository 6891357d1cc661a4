"""Evaluation figures as PNG bytes: the r histogram against the baselines, and measured-vs-predicted scatters.

Built with the object-oriented matplotlib API on the Agg canvas (no pyplot state); PNG metadata is fixed,
so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sequoia_clinic.evaluation.align import Aligned  # noqa: E402

DPI = 130


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def r_histogram(
    r: np.ndarray, baselines: Sequence[tuple[str, np.ndarray]], unit: str, passing_strict: int
) -> bytes:
    """Histogram of per-gene r (model) over those of the baselines."""
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot()
    finite = [v[np.isfinite(v)] for v in (r, *(b for _, b in baselines))]
    low = min((float(v.min()) for v in finite if v.size), default=-1.0)
    high = max((float(v.max()) for v in finite if v.size), default=1.0)
    bins = np.linspace(min(low, -0.2), max(high, 0.5), 41).tolist()
    for (label, values), colour in zip(baselines, ("#999999", "#d9a441"), strict=False):
        ax.hist(values[np.isfinite(values)], bins=bins, color=colour, alpha=0.6, label=label)
    ax.hist(r[np.isfinite(r)], bins=bins, color="#1f5fa8", alpha=0.75, label="model")
    ax.axvline(0.3, color="#b22222", linestyle="--", linewidth=1, label="strict rule: r ≥ 0.3")
    ax.set_xlabel(f"Pearson r, measured vs predicted (unit: {unit}, folds pooled)")
    ax.set_ylabel("genes")
    ax.set_title(f"{int(np.isfinite(r).sum())} genes; {passing_strict} pass the strict rule", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


def top_gene_scatter(aligned: Aligned, r: np.ndarray, count: int = 6) -> bytes:
    """Measured vs predicted for the ``count`` genes with the highest r."""
    order = np.argsort(np.where(np.isfinite(r), r, -np.inf))[::-1][:count]
    cols = 3
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig = Figure(figsize=(3.0 * cols, 2.7 * rows))
    for k, j in enumerate(order):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.scatter(aligned.measured[:, j], aligned.predicted[:, j], s=6, alpha=0.6, color="#1f5fa8")
        ax.set_title(f"{aligned.genes[j]}  r = {r[j]:.2f}", fontsize=9)
        ax.set_xlabel("measured", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)
