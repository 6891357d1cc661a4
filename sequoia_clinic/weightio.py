"""Reading weight files safely, checking their sha256 and loading them strictly into a network.

Shared by the tile encoders (:mod:`sequoia_clinic.encoders`), the aggregator folds
(:mod:`sequoia_clinic.aggregator`) and the bundle checks (:mod:`sequoia_clinic.bundles`).

Only two formats are accepted: safetensors, and PyTorch pickles read with ``torch.load(weights_only=True)``
(which refuses arbitrary code). Callers verify the file's sha256 against the bundle manifest before calling
:func:`read_state_dict`; with a :class:`HashMemo` the sha256 of an unchanged file (same path, size, mtime,
ctime, inode and device) is taken from a small on-disk memo instead of re-hashing, so a 1.2 GB encoder is
verified on every run at no cost. Loading is ``strict=True``: a missing, unexpected or mis-shaped tensor is refused
with a :class:`~sequoia_clinic.errors.WeightsError` that names the file and the first offending keys.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from sequoia_clinic.errors import BundleError, ChecksumError, WeightsError
from sequoia_clinic.fileio import JsonLimitError, read_json_bounded, sha256_file, write_json_atomic


def weights_format(path: Path) -> str:
    """'safetensors' for *.safetensors files, else 'torch' (a .bin/.pt/.pth pickle)."""
    return "safetensors" if Path(path).suffix == ".safetensors" else "torch"


def read_state_dict(path: Path, fmt: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` on the CPU (safetensors, or a weights-only torch pickle)."""
    path = Path(path)
    fmt = fmt or weights_format(path)
    try:
        if fmt == "safetensors":
            state = load_file(str(path), device="cpu")
        elif fmt == "torch":
            # mmap avoids a second in-memory copy; it needs the zip format of torch>=1.6 files.
            mmap = zipfile.is_zipfile(path)
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        else:
            raise WeightsError(f"unknown weights format '{fmt}'", path, fix="Use safetensors or torch.")
    except WeightsError:
        raise
    except Exception as exc:  # the readers raise many types for truncated/corrupt/foreign files
        raise WeightsError(
            f"cannot read weights ({type(exc).__name__})",
            path,
            fix="Supply an intact safetensors file or a PyTorch state dict saved with torch.save.",
        ) from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # some training frameworks wrap the weights
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError("the file does not hold a flat state dict of tensors", path)
    return dict(state)


def _summarise(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """``module.load_state_dict(state, strict=True, assign=True)``, with a readable error on mismatch.

    ``assign=True`` lets a module built on the meta device take the tensors without a copy; afterwards no
    parameter or buffer may remain on the meta device.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors: {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors: {_summarise(unexpected)}")
        if shapes:
            first = shapes[0]
            parts.append(
                f"{len(shapes)} shape mismatches, e.g. {first} {tuple(state[first].shape)} "
                f"vs {tuple(expected[first].shape)}"
            )
        raise WeightsError(
            f"weights do not fit the {what} architecture: " + "; ".join(parts),
            path,
            fix=f"Supply the weights file made for {what}.",
        )
    module.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftover:
        raise WeightsError(f"weights left {what} tensors uninitialised: {_summarise(leftover)}", path)


def drop_prefixes(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The state dict without keys that start with any of ``prefixes`` (e.g. a dropped classifier)."""
    if not prefixes:
        return dict(state)
    pattern = re.compile("^(" + "|".join(re.escape(p) for p in prefixes) + ")")
    return {k: v for k, v in state.items() if not pattern.match(k)}


MEMO_NAME = "sha256-memo.json"
MAX_MEMO_ENTRIES = 256


@dataclass(frozen=True)
class HashMemo:
    """sha256 of files, remembered in ``<folder>/sha256-memo.json`` by their identity on disk.

    The identity is (real path, size, mtime_ns, ctime_ns, inode, device): changing a file's bytes changes
    its ctime (which no user can set back), so a tampered file is always re-hashed. The memo is a cache:
    unreadable or unwritable, it is ignored.
    """

    folder: Path

    @staticmethod
    def identity(path: Path) -> str:
        st = os.stat(path)
        return (
            f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}"
        )

    def _entries(self) -> dict[str, str]:
        try:
            data = read_json_bounded(self.folder / MEMO_NAME, max_bytes=1 << 20, max_depth=2)
        except (OSError, JsonLimitError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}

    def sha256(self, path: Path) -> str:
        """The file's sha256, from the memo when its identity is unchanged, else hashed (and remembered)."""
        identity = self.identity(path)
        entries = self._entries()
        known = entries.get(identity)
        if known is not None:
            return known
        digest = sha256_file(path)
        entries.pop(identity, None)
        entries[identity] = digest
        kept = dict(list(entries.items())[-MAX_MEMO_ENTRIES:])
        try:
            write_json_atomic(self.folder / MEMO_NAME, kept)
        except OSError:  # a read-only cache: the result is the same, only slower next time
            pass
        return digest


def verify_sha256(path: Path, expected: str, what: str = "file", memo: HashMemo | None = None) -> None:
    """Refuse ``path`` unless its sha256 equals ``expected`` (the manifest's record); ``memo`` skips re-hashing."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{what} not found", path, fix="Restore the file or re-import the bundle.")
    actual = memo.sha256(path) if memo is not None else sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"sha256 mismatch for the {what}: expected {expected[:12]}…, found {actual[:12]}…",
            path,
            fix="The file was changed or corrupted; restore the original or re-import the bundle.",
        )
