"""The cohort manifest: one row per slide, read and checked completely before any work starts.

A manifest is a CSV (comma- or tab-separated by suffix) or Parquet table with the columns

* ``slide`` (required): a slide file, a DICOM WSI folder or one of its ``.dcm`` files; a relative path is
  relative to the manifest's folder;
* ``patient_id`` (required): written into each slide's report;
* ``slide_id`` (optional, unique): the row's name in every output; default the slide's file name stem;
* ``mpp`` (optional): the pixel size (um/px) overriding the slide's own; empty = the slide's;
* ``time`` and ``event`` (optional, together): follow-up time (unit given by ``time_unit``) and 1/0 (or
  true/false) event indicator; both empty in a row = no outcome for that slide;
* any other column is a clinical column, carried unchanged into the cohort table.

Every cell is read as text (so IDs such as ``007`` stay as written) and checked here. All problems are
collected and raised as ONE :class:`~sequoia_clinic.errors.TableError` listing them (rows numbered from 1,
the header not counted), so a user fixes the manifest in one go and nothing is started on a bad one.
Messages never repeat patient IDs.
"""

from __future__ import annotations

import difflib
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sequoia_clinic.errors import SequoiaError, TableError
from sequoia_clinic.slides.opening import slide_files
from sequoia_clinic.survival.cohort import FALSE_WORDS, MAX_PLAUSIBLE_YEARS, MIN_PLAUSIBLE_YEARS, TRUE_WORDS
from sequoia_clinic.units import TimeUnit

SLIDE, PATIENT, SLIDE_ID, MPP, TIME, EVENT = "slide", "patient_id", "slide_id", "mpp", "time", "event"
REQUIRED = (SLIDE, PATIENT)
KNOWN = (SLIDE, PATIENT, SLIDE_ID, MPP, TIME, EVENT)
MAX_LISTED_PROBLEMS = 30  # more are counted, not listed
FORBIDDEN_ID_CHARS = ("/", "\\", "\x00")


@dataclass(frozen=True)
class ManifestRow:
    """One slide of the cohort, checked."""

    row: int  # 1-based data row of the manifest
    slide_id: str
    slide: Path  # absolute
    patient_id: str
    mpp: float | None = None
    time: float | None = None  # in the manifest's time unit
    event: bool | None = None
    clinical: tuple[tuple[str, str], ...] = ()  # (column, value as written), in manifest column order


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: its rows in file order, the clinical columns and the outcome unit."""

    path: Path
    rows: tuple[ManifestRow, ...]
    clinical_columns: tuple[str, ...]
    has_outcomes: bool
    time_unit: TimeUnit | None


def _read_text_table(path: Path) -> pd.DataFrame:
    """Every cell as text ('' for empty); raises a one-line TableError for an unreadable file."""
    if not path.is_file():
        raise TableError("manifest not found", path, "Pass an existing CSV or Parquet file.")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
            frame = frame.astype(object).where(frame.notna(), "").astype(str)
        else:
            sep = "\t" if suffix == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise TableError("the manifest is not UTF-8 text", path, "Save it as UTF-8 CSV.") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise TableError(
            f"cannot read the manifest ({type(exc).__name__})", path, "Give a CSV or Parquet file."
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda column: column.str.strip())


def _missing_column(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"missing column '{name}'{hint}"


def _slide_problem(text: str, base: Path) -> tuple[Path | None, str | None]:
    """The absolute slide path, or why it cannot be a slide (existence and kind only; bytes are read later)."""
    if not text:
        return None, "empty slide path"
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    path = Path(os.path.abspath(path))
    if not path.exists():
        return path, f"slide not found: {text}"
    if path.is_dir():
        try:
            slide_files(path)
        except SequoiaError:
            return path, f"folder holds no slide (no DICOM WSI files): {text}"
        return path, None
    if not path.is_file():
        return path, f"not a regular file or folder: {text}"
    if not os.access(path, os.R_OK):
        return path, f"slide not readable (permissions): {text}"
    return path, None


def _default_slide_id(text: str) -> str:
    name = Path(text.rstrip("/\\")).name
    return Path(name).stem or name


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _outcome(time_text: str, event_text: str) -> tuple[float | None, bool | None, list[str]]:
    """(time, event, problems) of one row; both empty = no outcome."""
    if not time_text and not event_text:
        return None, None, []
    problems = []
    time = _float(time_text) if time_text else None
    if not time_text:
        problems.append("empty time (event given)")
    elif time is None:
        problems.append("time is not a number")
    elif time < 0:
        problems.append("negative time")
    word = event_text.lower()
    event = True if word in TRUE_WORDS else False if word in FALSE_WORDS else None
    if not event_text:
        problems.append("empty event (time given)")
    elif event is None:
        problems.append("event is not 0/1 or true/false")
    return time, event, problems


def _check_time_unit(rows: list[ManifestRow], unit: TimeUnit | None) -> list[str]:
    times = [r.time for r in rows if r.time is not None]
    if not times:
        return []
    if unit is None:
        return ["the manifest has outcome columns: pass --time-unit days, months or years"]
    longest = max(times) / unit.per_year
    if longest > MAX_PLAUSIBLE_YEARS or longest < MIN_PLAUSIBLE_YEARS:
        return [
            f"time unit mismatch: with --time-unit {unit.value} the longest follow-up is {longest:.3g} years"
        ]
    return []


def read_manifest(path: Path, time_unit: TimeUnit | None = None, reserved: tuple[str, ...] = ()) -> Manifest:
    """Read and check a manifest; every problem goes into one TableError (nothing is started on a bad one).

    ``reserved`` are column names of the output table that a clinical column must not reuse.
    """
    path = Path(path)
    frame = _read_text_table(path)
    columns = list(frame.columns)
    problems: list[str] = [_missing_column(c, columns) for c in REQUIRED if c not in columns]
    if (TIME in columns) != (EVENT in columns):
        problems.append(
            f"column '{TIME if TIME in columns else EVENT}' given without '{EVENT if TIME in columns else TIME}'"
        )
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    problems += [f"duplicate column '{c}'" for c in duplicated]
    clinical = tuple(c for c in columns if c not in KNOWN)
    problems += [
        f"column '{c}' is a name the cohort table uses itself; rename it" for c in clinical if c in reserved
    ]
    if frame.empty:
        problems.append("the manifest has no rows")
    has_outcomes = TIME in columns and EVENT in columns
    base = path.resolve().parent
    rows: list[ManifestRow] = []
    ids: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(frame.to_dict(orient="records"), start=1):
        cell = {str(k): str(v) for k, v in record.items()}
        where = f"row {index}"
        slide, problem = _slide_problem(cell.get(SLIDE, ""), base) if SLIDE in columns else (None, None)
        if problem:
            problems.append(f"{where}: {problem}")
        slide_id = cell.get(SLIDE_ID, "") or _default_slide_id(cell.get(SLIDE, ""))
        if SLIDE_ID in columns and not cell.get(SLIDE_ID, ""):
            problems.append(f"{where}: empty slide_id")
        elif any(c in slide_id for c in FORBIDDEN_ID_CHARS) or slide_id.startswith("."):
            problems.append(f"{where}: slide_id {slide_id!r} must not contain '/' or start with '.'")
        elif slide_id:
            ids[slide_id].append(index)
        patient = cell.get(PATIENT, "")
        if PATIENT in columns and not patient:
            problems.append(f"{where}: empty patient_id")
        mpp = None
        if cell.get(MPP, ""):
            mpp = _float(cell[MPP])
            if mpp is None or mpp <= 0:
                problems.append(f"{where}: mpp is not a positive number")
        time, event = None, None
        if has_outcomes:
            time, event, bad = _outcome(cell[TIME], cell[EVENT])
            problems += [f"{where}: {p}" for p in bad]
        rows.append(
            ManifestRow(
                row=index,
                slide_id=slide_id,
                slide=slide if slide is not None else Path(),
                patient_id=patient,
                mpp=mpp,
                time=time,
                event=event,
                clinical=tuple((c, cell[c]) for c in clinical),
            )
        )
    for slide_id, numbers in ids.items():
        if len(numbers) > 1:
            listed = ", ".join(str(i) for i in numbers)
            problems.append(f"duplicate slide_id {slide_id!r} (rows {listed})")
    if has_outcomes:
        problems += _check_time_unit(rows, time_unit)
    if problems:
        raise manifest_error(path, problems)
    return Manifest(path, tuple(rows), clinical, has_outcomes, time_unit if has_outcomes else None)


def manifest_error(path: Path, problems: list[str]) -> TableError:
    """One TableError listing every problem (the first MAX_LISTED_PROBLEMS, then a count)."""
    shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    if more > 0:
        shown += f"; and {more} more"
    noun = "problem" if len(problems) == 1 else "problems"
    return TableError(
        f"{len(problems)} {noun}: {shown}",
        path,
        "Fix the manifest; nothing was started.",
    )
