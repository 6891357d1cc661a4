"""Slide-level aggregators: SEQUOIA's ViS (checkpoint-compatible), the HE2RNA baseline, fold ensembles,
and the spatial (sliding-window) mode."""

from sequoia_clinic.aggregator.ensemble import (
    AGGREGATORS,
    FoldEnsemble,
    aggregator_kind,
    load_ensemble,
    load_fold,
)
from sequoia_clinic.aggregator.he2rna import HE2RNA, He2rnaConfig, build_he2rna
from sequoia_clinic.aggregator.vis import ViS, VisConfig, build_vis

__all__ = [
    "AGGREGATORS",
    "HE2RNA",
    "FoldEnsemble",
    "He2rnaConfig",
    "ViS",
    "VisConfig",
    "aggregator_kind",
    "build_he2rna",
    "build_vis",
    "load_ensemble",
    "load_fold",
]
