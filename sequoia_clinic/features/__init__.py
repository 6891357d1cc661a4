"""SEQUOIA model input: seeded tile sampling, k-means cluster features, and the per-slide feature cache."""

from sequoia_clinic.features.cache import CacheEntry, FeatureCache, cache_key
from sequoia_clinic.features.clusters import FILL_RULES, ClusterFeatures, cluster_features
from sequoia_clinic.features.sampling import sample_tiles

__all__ = [
    "FILL_RULES",
    "CacheEntry",
    "ClusterFeatures",
    "FeatureCache",
    "cache_key",
    "cluster_features",
    "sample_tiles",
]
