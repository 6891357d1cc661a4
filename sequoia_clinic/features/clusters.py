"""k-means cluster features: the 100 x D input of the SEQUOIA aggregator, with defined edge cases.

Reference behaviour (sequoia-pub ``kmean_features.py``): ``KMeans(n_clusters=100, random_state=0)`` on the
raw tile features, then row k = the mean feature of the tiles labelled k. scikit-learn 1.4.2 (pinned by the
reference) defaults to ``n_init='auto'``, which for k-means++ means ONE initialisation; we pass
``n_init=1`` explicitly so newer scikit-learn versions behave the same. Rows stay in label order.

Edge cases the reference leaves undefined (it skips <100-tile slides and writes NaN rows for empty
clusters, sequoia-pub issue #20 — and one NaN row turns every prediction into NaN):

* **Empty clusters** (k-means returned fewer than 100 distinct labels, e.g. when tiles repeat): the rows of
  the empty clusters are *filled* (see below); populated rows are exactly the reference's.
* **Fewer tiles than clusters** (n < 100): k-means is skipped; rows 0..n-1 are the tile features
  themselves in sampled order (each tile its own cluster) and the remaining rows are filled.
* **Fill value** (``FeatureSettings.empty_row_fill``): ``"slide-mean"`` (default) = the mean feature of all
  the slide's sampled tiles, an in-distribution "average tissue" token; ``"zeros"`` = zero rows, the
  convention of SEQUOIA's spatial mode, which zero-pads windows of <100 tile tokens. Neither was validated
  for bulk prediction by the authors.

Both cases add a QC warning to the result; the output is always finite.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from sequoia_clinic.qc import QCCode, QCWarning

FILL_RULES = ("slide-mean", "zeros")


@dataclass(frozen=True)
class ClusterFeatures:
    """The aggregator input of one slide and how it was made."""

    features: np.ndarray  # (n_clusters, D) float32, always finite
    labels: np.ndarray  # (n_tiles,) int64: the row each tile contributes to
    method: str  # "kmeans" or "tiles" (fewer tiles than clusters)
    n_populated: int  # rows backed by at least one tile
    filled_rows: tuple[int, ...]  # rows holding the fill value
    fill: str
    warnings: tuple[QCWarning, ...]


def _fill_row(tile_features: np.ndarray, fill: str) -> np.ndarray:
    if fill == "slide-mean":
        return tile_features.mean(axis=0, dtype=np.float64).astype(np.float32)
    if fill == "zeros":
        return np.zeros(tile_features.shape[1], dtype=np.float32)
    raise ValueError(f"unknown fill rule '{fill}'; use one of {FILL_RULES}")


def _kmeans_labels(tile_features: np.ndarray, n_clusters: int, seed: int, n_init: int) -> np.ndarray:
    from sklearn.cluster import KMeans  # ~0.8 s of import: only when a slide is clustered
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # "Number of distinct clusters found smaller than n_clusters": handled below as empty clusters.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init).fit(tile_features)
    return model.labels_.astype(np.int64)


def cluster_features(
    tile_features: np.ndarray,
    n_clusters: int = 100,
    seed: int = 0,
    n_init: int = 1,
    fill: str = "slide-mean",
) -> ClusterFeatures:
    """Cluster the (n, D) tile features of one slide into the (n_clusters, D) aggregator input."""
    x = np.ascontiguousarray(tile_features, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected (n >= 1, D) tile features, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("tile features contain NaN or infinity")
    fill_row = _fill_row(x, fill)
    out = np.empty((n_clusters, x.shape[1]), dtype=np.float32)
    notes: list[QCWarning] = []
    fill_text = "slide-mean feature" if fill == "slide-mean" else "zero vector"

    if len(x) < n_clusters:
        labels = np.arange(len(x), dtype=np.int64)
        out[: len(x)] = x
        filled = tuple(range(len(x), n_clusters))
        out[len(x) :] = fill_row
        notes.append(
            QCWarning(
                QCCode.FEW_TILES,
                f"only {len(x)} usable tiles (fewer than {n_clusters}): k-means was skipped, each tile is its own "
                f"token and the other {len(filled)} rows hold the {fill_text}; the reference SEQUOIA code cannot "
                "predict such slides, so interpret this prediction with caution",
            )
        )
        return ClusterFeatures(out, labels, "tiles", len(x), filled, fill, tuple(notes))

    labels = _kmeans_labels(x, n_clusters, seed, n_init)
    filled_rows = []
    for k in range(n_clusters):
        members = x[labels == k]
        if len(members) == 0:
            out[k] = fill_row
            filled_rows.append(k)
        else:
            out[k] = members.mean(axis=0)  # float32 mean, as the reference's np.mean on float32 features
    if filled_rows:
        notes.append(
            QCWarning(
                QCCode.EMPTY_CLUSTERS,
                f"k-means populated {n_clusters - len(filled_rows)} of {n_clusters} clusters; the "
                f"{len(filled_rows)} empty rows hold the {fill_text} (the reference code would give NaN "
                "predictions here, sequoia-pub issue #20)",
            )
        )
    return ClusterFeatures(
        out, labels, "kmeans", n_clusters - len(filled_rows), tuple(filled_rows), fill, tuple(notes)
    )
