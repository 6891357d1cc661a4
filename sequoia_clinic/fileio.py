"""Atomic output: write to a temporary sibling, then rename, so no partial output is ever left behind.

Also an early probe of output folders (:func:`probe_writable`, :func:`check_output_dir`) so that a command
fails before its work, not after it. And :func:`csv_safe_frame` / :func:`csv_safe_cell`, which every CSV the
tool writes passes through (spreadsheet formula injection); and :func:`read_json_bounded`, the one reader of
JSON files, with a size and nesting budget and finite numbers only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

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


# ---- CSV cells that a spreadsheet would run as formulas ----------------------------------------------------
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_safe_cell(value: Any) -> Any:
    """A text cell starting with ``= + - @``, tab or CR gets a leading ``'`` (OWASP CSV-injection rule).

    Numbers, and text that reads as a number (``-1.5``, ``-inf``), are left as they are.
    """
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES) and not _is_number(value):
        return "'" + value
    return value


def csv_safe_frame(frame: Any) -> Any:
    """A copy of a pandas DataFrame whose column names and text cells pass :func:`csv_safe_cell`."""
    out = frame.copy()
    out.columns = [csv_safe_cell(str(column)) for column in out.columns]
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype).startswith("string"):
            out[column] = out[column].map(csv_safe_cell)
    return out


# ---- JSON files with a size and nesting budget ---------------------------------------------------------------
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_OPENERS = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSERS = np.frombuffer(b"]}", dtype=np.uint8)
MAX_JSON_BYTES = 64 << 20  # default size limit of a JSON file the tool reads
MAX_JSON_DEPTH = 32  # default nesting limit (objects and arrays); no file the tool writes nests deeper than 8


class JsonLimitError(ValueError):
    """A JSON text above its size or nesting budget, holding NaN/Infinity, or not valid JSON."""


def _reject_constant(name: str) -> Any:
    raise JsonLimitError(f"holds {name}, which is not a JSON number")


def json_depth(text: str) -> int:
    """Deepest nesting of objects/arrays in ``text`` (strings skipped), found without recursion."""
    stripped = _JSON_STRING.sub('""', text).encode("utf-8", "replace")
    if not stripped:
        return 0
    codes = np.frombuffer(stripped, dtype=np.uint8)
    steps = np.isin(codes, _OPENERS).astype(np.int64) - np.isin(codes, _CLOSERS).astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def parse_json_bounded(raw: bytes, max_depth: int = MAX_JSON_DEPTH, finite_only: bool = True) -> Any:
    """Parse JSON bytes: UTF-8, nesting at most ``max_depth``, finite numbers only; else JsonLimitError.

    ``finite_only=False`` reads NaN/Infinity as floats, for readers that check every number themselves and
    name the key (risk models).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonLimitError("is not UTF-8 text") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise JsonLimitError(f"nests {depth} levels deep, above the limit of {max_depth}")
    try:
        return json.loads(text, parse_constant=_reject_constant if finite_only else None)
    except json.JSONDecodeError as exc:
        raise JsonLimitError(f"is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:  # not reachable after the depth check; kept so no input can crash the reader
        raise JsonLimitError("nests too deep") from None


def read_json_bounded(
    path: Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH, finite_only: bool = True
) -> Any:
    """Read a JSON file within a size and nesting budget (see :func:`parse_json_bounded`).

    Raises JsonLimitError (with a reason, no file name) for anything over budget or malformed; OSError as
    it comes, for the caller to name the file.
    """
    with open(path, "rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise JsonLimitError(f"is larger than the limit of {max_bytes >> 20} MiB")
    return parse_json_bounded(raw, max_depth, finite_only)
