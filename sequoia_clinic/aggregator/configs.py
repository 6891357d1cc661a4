"""Aggregator configs: the ``aggregator.config`` of a bundle manifest, parsed without importing torch.

:class:`VisConfig` is the SEQUOIA ``config.json`` of the ViS transformer (``vis.py``); :class:`He2rnaConfig`
the HE2RNA MLP baseline (``he2rna.py``). Parsing a manifest (``models list``, ``verify``) needs these
records but not the networks, so they live apart from the torch modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sequoia_clinic.errors import BundleError


@dataclass(frozen=True)
class VisConfig:
    """The fields of a SEQUOIA ``config.json`` (``device`` is ignored: we run where the user chooses)."""

    num_outputs: int
    input_dim: int
    depth: int
    nheads: int
    dimensions_f: int
    dimensions_s: int
    dimensions_c: int
    num_clusters: int = 100

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config.json") -> VisConfig:
        """Parse a config mapping; unknown keys other than ``device`` are refused."""
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - fields - {"device"})
        if unknown:
            raise BundleError(f"unknown ViS config fields {unknown}", source)
        values: dict[str, int] = {}
        for name in fields:
            if name not in data:
                if name == "num_clusters":
                    continue
                raise BundleError(f"ViS config lacks '{name}'", source)
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BundleError(f"ViS config '{name}' must be a positive integer, got {value!r}", source)
            values[name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class He2rnaConfig:
    input_dim: int
    output_dim: int
    layers: tuple[int, ...] = (256, 256)
    ks: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)
    num_clusters: int = 100

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config.json") -> He2rnaConfig:
        try:
            return cls(
                input_dim=int(data["input_dim"]),
                output_dim=int(data["output_dim"]),
                layers=tuple(int(v) for v in data.get("layers", (256, 256))),
                ks=tuple(int(v) for v in data.get("ks", (1, 2, 5, 10, 20, 50, 100))),
                num_clusters=int(data.get("num_clusters", 100)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed HE2RNA config ({exc})", source) from None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"], out["ks"] = list(self.layers), list(self.ks)
        return out

    @property
    def num_outputs(self) -> int:
        return self.output_dim
