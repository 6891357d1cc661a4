"""Atomic output: write to a temporary sibling, then rename, so no partial output is ever left behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sequoia_clinic.errors import OptionError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files others may read
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: Path, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: Path, obj: Any) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def check_output_dir(target: Path) -> None:
    """Fail early (before any work) when ``target`` cannot become an output folder."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OptionError(
            "the output path exists and is not a folder", path=target, fix="Choose a folder name."
        )
    ancestor = target
    while not ancestor.exists():
        ancestor = ancestor.parent
    try:  # a real probe: os.access says yes to root even on read-only or pseudo file systems
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=ancestor))
    except OSError:
        raise OptionError(
            "cannot create or write the output folder", path=target, fix="Choose a writable folder."
        ) from None


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success its files are moved into ``target``.

    ``target`` may already exist (its other files are kept); files of the same name are replaced.
    On failure the temporary directory is removed and ``target`` is left as it was (and is not
    created if it did not exist).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        yield tmp
        target.mkdir(parents=True, exist_ok=True)
        for item in sorted(tmp.iterdir()):
            os.replace(item, target / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
