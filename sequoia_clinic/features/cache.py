"""Per-slide cache of tile features and cluster features, so a second prediction skips tile encoding.

An entry is one ``.npz`` file (no pickles) named by a key: the sha256 of a canonical JSON of everything
the tile features depend on — the slide's content hash, the encoder name and its weights' sha256, and the
preprocessing (tissue, tile, sampling settings and any mpp override). Cluster features are stored in the
same entry together with the clustering parameters they were made with; a reader recomputes them when
those parameters differ. Entries are written atomically; an unreadable entry counts as a miss. The cache is
an optimisation only: :meth:`FeatureCache.write_problem` probes the folder up front, and the caller treats an
OSError from :meth:`FeatureCache.save` as "not cached", never as a failed run.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sequoia_clinic.fileio import atomic_path, probe_writable

CACHE_FORMAT = "sequoia-clinic-features/1"
_META = "__meta__"


def cache_key(material: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``material`` (sorted keys; paths and tuples as strings/lists)."""
    text = json.dumps(
        {"format": CACHE_FORMAT, **material}, sort_keys=True, default=str, separators=(",", ":")
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


@dataclass(frozen=True)
class FeatureCache:
    """A folder of feature entries: ``<root>/features/<key[:2]>/<key>.npz``."""

    root: Path

    def path(self, key: str) -> Path:
        return Path(self.root) / "features" / key[:2] / f"{key}.npz"

    def write_problem(self) -> str | None:
        """None when entries can be written under ``root``; else the reason. Creates nothing."""
        return probe_writable(Path(self.root) / "features")

    def load(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key``, or None (missing, unreadable or from another format)."""
        path = self.path(key)
        try:
            if not path.is_file():
                return None
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files if name != _META}
                meta = json.loads(str(data[_META])) if _META in data.files else {}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
            return None
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            return None
        return CacheEntry(arrays=arrays, meta=meta)

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        """Write one entry atomically; raises OSError when the folder is not writable or the disk is full."""
        path = self.path(key)
        full_meta = {**meta, "format": CACHE_FORMAT, "key": key}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle,
                    **{name: np.asarray(a) for name, a in arrays.items()},
                    **{_META: json.dumps(full_meta)},
                )
        return path
