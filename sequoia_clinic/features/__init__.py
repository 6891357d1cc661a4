"""SEQUOIA model input: the tile-order rules, k-means cluster features, and the per-slide feature cache."""

from sequoia_clinic.features.cache import CacheEntry, CacheLookup, FeatureCache, cache_key
from sequoia_clinic.features.clusters import FILL_RULES, ClusterFeatures, cluster_features
from sequoia_clinic.features.sampling import (
    check_order,
    first_passing,
    kmeans_order,
    reference_lattice_shape,
    resolve_tile_order,
)

__all__ = [
    "FILL_RULES",
    "CacheEntry",
    "CacheLookup",
    "ClusterFeatures",
    "FeatureCache",
    "cache_key",
    "check_order",
    "cluster_features",
    "first_passing",
    "kmeans_order",
    "reference_lattice_shape",
    "resolve_tile_order",
]
