"""Atomic output: write to a temporary sibling, then rename, so no partial output is ever left behind.

Also an early probe of output folders (:func:`probe_writable`, :func:`check_output_dir`) so that a command
fails before its work, not after it. And :func:`csv_safe_frame` / :func:`csv_safe_cell`, which every CSV the
tool writes passes through (spreadsheet formula injection); and :func:`read_json_bounded`, the one reader of
JSON files, with a size and nesting budget and finite numbers only; and :func:`read_table_columns`, which reads
only the needed columns of a CSV/TSV/Parquet table, typed, within stated limits (:class:`TableLimits`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from sequoia_clinic.errors import InputPathError, OptionError, SequoiaError, TableError

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


# ---- tables (CSV, TSV, Parquet) within stated limits, only the needed columns, typed ------------------------
MAX_TABLE_BYTES = 256 << 20  # default: a table file larger than this is refused before it is parsed
MAX_TABLE_COLUMNS = 100_000
MAX_TABLE_ROWS = 1_000_000
MAX_HEADER_BYTES = 16 << 20  # a CSV header line longer than this is refused unparsed
PARQUET_SUFFIXES = (".parquet", ".pq")
_LOCATE_CHUNK_ROWS = 50_000  # rows per chunk when a non-numeric cell is looked for
_SHOWN_COLUMNS = 10
_SHOWN_NAME_CHARS = 40


class ColumnType(StrEnum):
    """How one needed column is parsed."""

    TEXT = "text"  # str (ids, event words, category labels); empty cells are missing
    NUMBER = "number"  # float64 (CSV); a cell that is not a number is refused naming column and row
    INFER = "infer"  # pandas' own guess for this one column (kept where callers check the type themselves)


_PRIORITY = {ColumnType.TEXT: 0, ColumnType.INFER: 1, ColumnType.NUMBER: 2}


def merge_column_types(*plans: Mapping[str, ColumnType]) -> dict[str, ColumnType]:
    """One plan from several; a column asked for twice gets the stricter type (number > infer > text)."""
    out: dict[str, ColumnType] = {}
    for plan in plans:
        for column, kind in plan.items():
            if column not in out or _PRIORITY[kind] > _PRIORITY[out[column]]:
                out[column] = kind
    return out


@dataclass(frozen=True)
class TableLimits:
    """What a table may hold: file bytes, columns in the header, data rows."""

    max_bytes: int = MAX_TABLE_BYTES
    max_columns: int = MAX_TABLE_COLUMNS
    max_rows: int = MAX_TABLE_ROWS


TABLE_LIMITS = TableLimits()


@dataclass(frozen=True)
class TableFormat:
    """How a table file is read: ``sep`` None for Parquet."""

    path: Path
    what: str  # "table", "expression table", ... (starts the messages)
    sep: str | None
    limits: TableLimits


def table_format(
    path: Path,
    what: str = "table",
    limits: TableLimits = TABLE_LIMITS,
    tab_suffixes: tuple[str, ...] = (".tsv",),
) -> TableFormat:
    """Check that ``path`` is a file within the size limit and say how it is read (by its suffix)."""
    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"{what} not found", path, "Pass an existing CSV, TSV or Parquet file.")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise TableError(
            f"the {what} has {size / 2**20:,.0f} MiB, above the limit of {limits.max_bytes >> 20} MiB",
            path,
            "Keep only the columns the command needs.",
        )
    suffix = path.suffix.lower()
    sep = None if suffix in PARQUET_SUFFIXES else "\t" if suffix in tab_suffixes else ","
    return TableFormat(path, what, sep, limits)


@contextlib.contextmanager
def _table_errors(fmt: TableFormat) -> Iterator[None]:
    """Parser and file errors as one TableError naming the file (SequoiaErrors pass through)."""
    import pandas as pd  # noqa: PLC0415 (heavy; loaded when a table is read)
    import pyarrow as pa  # noqa: PLC0415

    try:
        yield
    except SequoiaError:
        raise
    except UnicodeDecodeError:
        raise TableError(f"the {fmt.what} is not UTF-8 text", fmt.path, "Save it as UTF-8 CSV.") from None
    except pd.errors.EmptyDataError:
        raise TableError(
            f"the {fmt.what} is empty", fmt.path, "Give a header row and one row per patient."
        ) from None
    except (ValueError, IndexError, OSError, csv.Error, pd.errors.ParserError, pa.ArrowException) as exc:
        # (IndexError: pandas' C parser on rows it cannot line up with the header)
        raise TableError(
            f"cannot read the {fmt.what} ({type(exc).__name__})", fmt.path, "Give a CSV, TSV or Parquet file."
        ) from None


def _header_bytes(fmt: TableFormat) -> bytes:
    """The bytes of a CSV's header record (at most :data:`MAX_HEADER_BYTES`).

    A quoted name may hold a line break, so lines are added while the quotes are unbalanced.
    """
    raw = b""
    with open(fmt.path, "rb") as handle:
        while True:
            line = handle.readline(MAX_HEADER_BYTES + 1 - len(raw))
            raw += line
            if len(raw) > MAX_HEADER_BYTES:
                raise TableError(
                    f"the header is longer than {MAX_HEADER_BYTES >> 20} MiB",
                    fmt.path,
                    "Keep only the columns the command needs.",
                )
            if not line or raw.count(b'"') % 2 == 0:
                return raw


def _header_record(fmt: TableFormat) -> list[str]:
    """The header's names, parsed by the csv module (pandas would build an empty frame of every column)."""
    sep = fmt.sep or ","
    raw = _header_bytes(fmt)
    if raw.count(sep.encode()) + 1 > fmt.limits.max_columns:  # counted before any name is made
        raise TableError(
            f"the {fmt.what} has more than {fmt.limits.max_columns:,} columns",
            fmt.path,
            "Keep only the columns the command needs.",
        )
    text = raw.decode("utf-8-sig")  # UnicodeDecodeError: reported as "not UTF-8 text"
    if not text.strip():
        raise TableError(
            f"the {fmt.what} is empty or its first line is blank",
            fmt.path,
            "Start the file with the header row.",
        )
    if "\x00" in text:
        raise TableError(
            f"the {fmt.what} holds NUL bytes: it is not a text table",
            fmt.path,
            "Give a CSV, TSV or Parquet file.",
        )
    names = next(csv.reader(text.splitlines(keepends=True), delimiter=sep))
    # an empty header cell (R's write.csv leaves the row-name column unnamed) gets pandas' name for it, so
    # that the names here and the ones pandas gives the parsed columns agree
    return [name if name else f"Unnamed: {index}" for index, name in enumerate(names)]


@contextlib.contextmanager
def _csv_body(
    fmt: TableFormat, positions: Sequence[int], types: Mapping[int, Any], chunksize: int | None = None
) -> Iterator[Any]:
    """The data rows after the header record, only the columns at ``positions``: a frame, or a chunk reader
    with ``chunksize``. pandas never sees the header, so it makes no name for the columns not read."""
    import pandas as pd  # noqa: PLC0415 (heavy; loaded when a table is read)

    with open(fmt.path, "rb") as handle:
        handle.seek(len(_header_bytes(fmt)))
        try:
            result = pd.read_csv(
                handle,
                sep=fmt.sep,
                encoding="utf-8",
                header=None,
                usecols=list(positions),
                dtype=dict(types),
                nrows=fmt.limits.max_rows + 1,
                chunksize=chunksize,
                engine="c",
            )
        except pd.errors.EmptyDataError:
            raise TableError(f"the {fmt.what} has no rows", fmt.path, "Give one row per patient.") from None
        yield result


def _check_separator(header: Sequence[str], fmt: TableFormat) -> None:
    """A single column whose name holds another separator: the file was saved with the wrong one."""
    if len(header) != 1 or fmt.sep is None:
        return
    expected = "tab" if fmt.sep == "\t" else "comma"
    for separator, word in ((";", "semicolon"), ("\t", "tab"), (",", "comma")):
        if separator in header[0] and word != expected:
            raise TableError(
                f"the {fmt.what} looks {word}-separated (one column found)",
                fmt.path,
                "Save it as comma-separated CSV (or tab-separated with a .tsv name).",
            )


def read_table_header(fmt: TableFormat) -> tuple[str, ...]:
    """The column names as in the file, within the limits (a CSV's header record only; a Parquet schema)."""
    import pyarrow.parquet as pq  # noqa: PLC0415 (heavy; loaded when a table is read)

    limits = fmt.limits
    with _table_errors(fmt):
        if fmt.sep is None:
            metadata = pq.read_metadata(fmt.path)
            if metadata.num_rows > limits.max_rows:
                raise TableError(
                    f"the {fmt.what} has more than {limits.max_rows:,} rows",
                    fmt.path,
                    "Split it or keep the rows needed.",
                )
            names = [str(c) for c in metadata.schema.to_arrow_schema().names]
        else:
            names = _header_record(fmt)
    if len(names) > limits.max_columns:
        raise TableError(
            f"the {fmt.what} has {len(names):,} columns, above the limit of {limits.max_columns:,}",
            fmt.path,
            "Keep only the columns the command needs.",
        )
    _check_separator(names, fmt)
    return tuple(names)


def header_frame(header: Sequence[str]) -> Any:
    """An empty pandas DataFrame with these columns (for column checks that take a frame)."""
    import pandas as pd  # noqa: PLC0415 (heavy; loaded when a table is read)

    # float columns of no rows: pd.DataFrame(columns=...) would build one object block per column
    return pd.DataFrame(np.empty((0, len(header))), columns=list(header))


def _name(column: str) -> str:
    """A column name fit for a one-line message: control characters shown as '?', long names cut."""
    clean = "".join("?" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in column)
    return clean if len(clean) <= _SHOWN_NAME_CHARS else clean[: _SHOWN_NAME_CHARS - 3] + "..."


def _shown(names: Sequence[str]) -> str:
    cut = [_name(c) for c in names[: _SHOWN_COLUMNS + 1]]
    return ", ".join(cut[:_SHOWN_COLUMNS]) + (", ..." if len(cut) > _SHOWN_COLUMNS else "")


def _non_numeric(fmt: TableFormat, column: str, row: int) -> TableError:
    return TableError(
        f"column '{_name(column)}' has a non-numeric value in data row {row:,}",
        fmt.path,
        "Give a number (or leave the cell empty) in every row of that column.",
    )


def _locate_non_numeric(fmt: TableFormat, numeric: Mapping[int, str]) -> TableError | None:
    """The first cell of the numeric columns (position -> name) that is not a number, read again in chunks
    as text."""
    import pandas as pd  # noqa: PLC0415 (heavy; loaded when a table is read)

    positions = sorted(numeric)
    with _csv_body(fmt, positions, dict.fromkeys(positions, str), _LOCATE_CHUNK_ROWS) as reader:
        for start, chunk in enumerate(reader):
            first: tuple[int, str] | None = None
            for j, position in enumerate(positions):
                text = chunk.iloc[:, j]
                bad = (pd.to_numeric(text, errors="coerce").isna() & text.notna()).to_numpy()
                if bad.any() and (first is None or int(np.argmax(bad)) < first[0]):
                    first = (int(np.argmax(bad)), numeric[position])
            if first is not None:
                return _non_numeric(fmt, first[1], start * _LOCATE_CHUNK_ROWS + first[0] + 1)
    return None


def _numeric_parquet_columns(frame: Any, fmt: TableFormat, numeric: Sequence[str]) -> Any:
    import pandas as pd  # noqa: PLC0415 (heavy; loaded when a table is read)

    for column in numeric:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series):
            continue
        values = pd.to_numeric(series, errors="coerce")
        bad = (values.isna() & series.notna()).to_numpy()
        if bad.any():
            raise _non_numeric(fmt, column, int(np.argmax(bad)) + 1)
        frame[column] = values.astype(np.float64)
    return frame


def read_table_columns(
    fmt: TableFormat, columns: Mapping[str, ColumnType], header: Sequence[str] | None = None
) -> Any:
    """A pandas DataFrame of only ``columns`` (in file order), each parsed as its :class:`ColumnType`.

    Other columns are never materialised. A needed column that is absent, a cell of a NUMBER column that is
    not a number (naming its 1-based data row), a file over the limits, or one that cannot be parsed is one
    TableError naming the file. Empty cells and NA words are missing values (NaN), for the caller to judge.
    """
    import pandas as pd  # noqa: PLC0415 (heavy; loaded when a table is read)
    import pyarrow.parquet as pq  # noqa: PLC0415

    header = tuple(header) if header is not None else read_table_header(fmt)
    present = set(header)
    for column in columns:
        if column not in present:
            raise TableError(
                f"column '{_name(column)}' not found; the {fmt.what} has {len(header)} columns: {_shown(header)}",
                fmt.path,
                "Pass the exact column name.",
            )
    positions = [i for i, name in enumerate(header) if name in columns]  # file order
    wanted = [header[i] for i in positions]
    twice = next((c for c in wanted if wanted.count(c) > 1), None)
    if twice is not None:
        raise TableError(
            f"column '{_name(twice)}' appears {wanted.count(twice)} times in the {fmt.what}",
            fmt.path,
            "Give every column a distinct name.",
        )
    numeric = {i: c for i, c in zip(positions, wanted, strict=True) if columns[c] is ColumnType.NUMBER}
    with _table_errors(fmt):
        if fmt.sep is None:
            frame = pq.read_table(fmt.path, columns=wanted).to_pandas()
            frame.columns = [str(c) for c in frame.columns]
            frame = _numeric_parquet_columns(frame, fmt, list(numeric.values()))
        else:
            types: dict[int, Any] = {
                i: (np.float64 if columns[c] is ColumnType.NUMBER else str)
                for i, c in zip(positions, wanted, strict=True)
                if columns[c] is not ColumnType.INFER
            }
            try:
                with _csv_body(fmt, positions, types) as body:
                    frame = body
            except ValueError as exc:
                if isinstance(exc, pd.errors.ParserError | UnicodeDecodeError) or not numeric:
                    raise
                located = _locate_non_numeric(fmt, numeric)
                if located is None:
                    raise
                raise located from None
            if frame.shape[1] != len(wanted):  # not reachable for a well-formed file; never mislabel
                raise TableError(
                    f"the {fmt.what}'s rows do not match its header", fmt.path, "Give one value per column."
                )
            frame.columns = wanted
    if len(frame) > fmt.limits.max_rows:
        raise TableError(
            f"the {fmt.what} has more than {fmt.limits.max_rows:,} rows",
            fmt.path,
            "Split it or keep the rows needed.",
        )
    if frame.empty:
        raise TableError(f"the {fmt.what} has no rows", fmt.path, "Give one row per patient.")
    return frame
