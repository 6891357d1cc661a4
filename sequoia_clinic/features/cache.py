"""Per-slide cache of tile features and cluster features, so a second prediction skips tile encoding.

An entry is one ``.npz`` file (no pickles) named by a key: the sha256 of a canonical JSON of everything
the tile features depend on — the slide's content hash, the encoder name and its weights' sha256, and the
preprocessing (tissue, tile, sampling settings and any mpp override). Cluster features are stored in the
same entry together with the clustering parameters they were made with; a reader recomputes them when
those parameters differ. Entries are written atomically. Each entry carries a checksum of its arrays and the
sha256 of the encoder weights that made it; an entry that is unreadable, over its size or nesting budget,
fails its checksum, holds non-finite numbers or was made by other weights is a miss with a reason
(:class:`CacheLookup`), never used. The cache is an optimisation only: :meth:`FeatureCache.write_problem`
probes the folder up front, and the caller treats an OSError from :meth:`FeatureCache.save` as "not cached",
never as a failed run.

An entry also keeps, in its index, the QC notes that reading the slide's pixels produced when it was made
(damaged stored tiles, a converted pixel format; :func:`notes_to_meta` / :func:`notes_from_meta`), so that a
cache hit, which decodes no tile, reports the same notes as the run that made it. Entries of the previous
format (``/2``) do not hold these notes: the format is part of every key, so such an entry is never looked
up again (a plain miss: the features are recomputed and stored under the new key), never read as "no
notes".
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sequoia_clinic.fileio import JsonLimitError, atomic_path, parse_json_bounded, probe_writable
from sequoia_clinic.qc import QCCode, QCWarning

# /2: entries carry a checksum and the weights' sha256; /3: and the slide-reading QC notes
CACHE_FORMAT = "sequoia-clinic-features/3"
_META = "__meta__"
MAX_ENTRY_BYTES = 1 << 30  # an entry file larger than this is not read (4,000 x 1,024-d float32 is 16 MB)
MAX_META_CHARS = 1 << 20
MAX_META_DEPTH = 8
MAX_NOTES = 32  # QC notes stored with one entry
MAX_NOTE_CHARS = 1_000


def arrays_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def notes_to_meta(notes: Sequence[QCWarning]) -> list[list[str]]:
    """QC notes as the entry index stores them: ``[[code, message], ...]`` in their order."""
    return [[note.code.value, note.message] for note in notes]


def notes_from_meta(value: object) -> tuple[QCWarning, ...]:
    """The QC notes stored by :func:`notes_to_meta`; ValueError when ``value`` is not such a list.

    Every code must be a known :class:`~sequoia_clinic.qc.QCCode` and every message a bounded string.
    """
    if not isinstance(value, list) or len(value) > MAX_NOTES:
        raise ValueError(f"the stored QC notes are not a list of at most {MAX_NOTES}")
    notes = []
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(part, str) for part in item)
            and len(item[1]) <= MAX_NOTE_CHARS
        ):
            raise ValueError("a stored QC note is not a [code, message] pair of strings")
        notes.append(QCWarning(QCCode(item[0]), item[1]))  # ValueError for an unknown code
    return tuple(notes)


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
class CacheLookup:
    """A cache read: the entry, or None with the reason a stored entry was refused (None: no entry)."""

    entry: CacheEntry | None
    problem: str | None = None


def _finite(arrays: Mapping[str, np.ndarray]) -> bool:
    return all(
        np.isfinite(a).all() for a in arrays.values() if np.issubdtype(np.asarray(a).dtype, np.floating)
    )


@dataclass(frozen=True)
class FeatureCache:
    """A folder of feature entries: ``<root>/features/<key[:2]>/<key>.npz``."""

    root: Path

    def path(self, key: str) -> Path:
        return Path(self.root) / "features" / key[:2] / f"{key}.npz"

    def write_problem(self) -> str | None:
        """None when entries can be written under ``root``; else the reason. Creates nothing."""
        return probe_writable(Path(self.root) / "features")

    def load(self, key: str, weights_sha256: str) -> CacheLookup:
        """The entry under ``key`` if it is intact and was made by weights ``weights_sha256``.

        A missing entry is ``CacheLookup(None)``; a refused one carries the reason in ``problem``.
        """
        path = self.path(key)
        try:
            if not path.is_file():
                return CacheLookup(None)
            if path.stat().st_size > MAX_ENTRY_BYTES:
                return CacheLookup(None, "the entry is larger than the cache allows")
            with np.load(path, allow_pickle=False) as data:
                if _META not in data.files:
                    return CacheLookup(None, "the entry has no index")
                text = str(data[_META])
                if len(text) > MAX_META_CHARS:
                    return CacheLookup(None, "the entry's index is too large")
                meta = parse_json_bounded(text.encode("utf-8"), MAX_META_DEPTH)
                arrays = {name: data[name] for name in data.files if name != _META}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, JsonLimitError) as exc:
            return CacheLookup(None, f"the entry cannot be read ({type(exc).__name__})")
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            return CacheLookup(None, "the entry is from another cache format")
        if meta.get("checksum") != arrays_checksum(arrays):
            return CacheLookup(None, "the entry fails its checksum (corrupted)")
        if meta.get("weights_sha256") != weights_sha256:
            return CacheLookup(None, "the entry was made with other encoder weights")
        if not _finite(arrays):
            return CacheLookup(None, "the entry holds non-finite numbers")
        return CacheLookup(CacheEntry(arrays=arrays, meta=meta))

    def save(
        self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], weights_sha256: str
    ) -> Path:
        """Write one entry atomically; raises OSError when the folder is not writable or the disk is full."""
        path = self.path(key)
        arrays = {name: np.asarray(a) for name, a in arrays.items()}
        full_meta = {
            **meta,
            "format": CACHE_FORMAT,
            "key": key,
            "checksum": arrays_checksum(arrays),
            "weights_sha256": weights_sha256,
        }
        payload: dict[str, Any] = {**arrays, _META: np.array(json.dumps(full_meta))}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **payload)
        return path
