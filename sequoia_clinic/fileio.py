"""Atomic output: write to a temporary sibling, then rename, so no partial output is ever left behind.

Also an early probe of output folders (:func:`probe_writable`, :func:`check_output_dir`) so that a command
fails before its work, not after it.
"""

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


def _naming(exc: OSError, target: Path, temporary: Path | None = None) -> OSError:
    """``exc`` re-addressed to ``target`` when it is about the temporary file/folder (or a file inside it).

    Users should read the path they asked for, never the hidden ``.name.xxxx.part`` sibling. With
    ``temporary`` None (it was not created yet) any OSError that names a file is re-addressed.
    """
    name = exc.filename
    if not isinstance(name, str | os.PathLike) or exc.errno is None:
        return exc
    if temporary is not None and not (Path(name) == temporary or temporary in Path(name).parents):
        return exc
    try:
        return type(exc)(exc.errno, exc.strerror, str(target))
    except TypeError:  # an OSError subclass with its own constructor: keep it as it is
        return exc


@contextlib.contextmanager
def _user_paths(target: Path, temporary: Path | None = None) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        renamed = _naming(exc, target, temporary)
        if renamed is exc:
            raise
        raise renamed from exc


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    The file gets mode 0644 just before the rename, however the block wrote it (``mkstemp`` creates 0600,
    and writers such as safetensors replace the temporary file with a new one). An OSError about the
    temporary file is re-raised naming ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _user_paths(target):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _user_paths(target, tmp):
            yield tmp
            os.chmod(tmp, 0o644)  # outputs are ordinary files others may read
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


def probe_writable(folder: Path) -> str | None:
    """None when ``folder`` exists or could be created, and files can be written there; else the reason.

    A real probe that leaves nothing behind (a temporary folder in the nearest existing ancestor):
    ``os.access`` says yes to root even on read-only or pseudo file systems.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return "the path exists and is not a folder"
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=ancestor))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def check_output_dir(target: Path) -> None:
    """Fail early (before any work) when ``target`` cannot become an output folder."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OptionError(
            "the output path exists and is not a folder", path=target, fix="Choose a folder name."
        )
    if probe_writable(target) is not None:
        raise OptionError(
            "cannot create or write the output folder", path=target, fix="Choose a writable folder."
        )


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success its files are moved into ``target``.

    ``target`` may already exist (its other files are kept); files of the same name are replaced.
    On failure the temporary directory is removed and ``target`` is left as it was (and is not
    created if it did not exist). An OSError about the temporary folder is re-raised naming ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _user_paths(target):
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        with _user_paths(target, tmp):
            yield tmp
            target.mkdir(parents=True, exist_ok=True)
            for item in sorted(tmp.iterdir()):
                os.replace(item, target / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
