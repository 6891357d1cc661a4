"""Aggregator registry: the ``aggregator.kind`` of a bundle manifest → its config parser and network builder.

Torch-free on import: a manifest is parsed and checked (``models list``, ``verify``, the feature-cache key)
without loading torch; the builders import their network module only when a network is made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sequoia_clinic.aggregator.configs import He2rnaConfig, VisConfig
from sequoia_clinic.errors import BundleError

if TYPE_CHECKING:
    from torch import nn


def _build_vis(config: VisConfig, meta: bool) -> nn.Module:
    from sequoia_clinic.aggregator.vis import build_vis

    return build_vis(config, meta)


def _build_he2rna(config: He2rnaConfig, meta: bool) -> nn.Module:
    from sequoia_clinic.aggregator.he2rna import build_he2rna

    return build_he2rna(config, meta)


@dataclass(frozen=True)
class AggregatorKind:
    name: str
    parse: Callable[[Mapping[str, Any], str], Any]  # (config dict, source) -> config record
    build: Callable[[Any, bool], nn.Module]  # (config record, meta) -> module
    description: str


AGGREGATORS: Mapping[str, AggregatorKind] = MappingProxyType(
    {
        "vis": AggregatorKind(
            "vis", VisConfig.from_dict, _build_vis, "SEQUOIA ViS (SummaryMixing transformer)"
        ),
        "he2rna": AggregatorKind("he2rna", He2rnaConfig.from_dict, _build_he2rna, "HE2RNA MLP baseline"),
    }
)


def aggregator_kind(name: str) -> AggregatorKind:
    try:
        return AGGREGATORS[name]
    except KeyError:
        raise BundleError(
            f"unknown aggregator kind '{name}'", fix=f"Use one of: {', '.join(AGGREGATORS)}."
        ) from None
