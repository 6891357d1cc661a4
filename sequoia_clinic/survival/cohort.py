"""Reading and validating a cohort table (CSV or Parquet): survival columns, gene columns, covariates.

Everything a user can get wrong in the table is checked here, at the boundary, and reported as one
:class:`~sequoia_clinic.errors.TableError` naming the file, the column and the fix (never a patient ID).
Times are converted to years (days / 365.25, months / 12); all models keep time in years. The tables
themselves are read by :func:`sequoia_clinic.fileio.read_table_columns` (stated limits, only the columns a
caller needs, typed).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sequoia_clinic.errors import OptionError, TableError
from sequoia_clinic.signatures.mapping import (
    ColumnMatch,
    DuplicateGeneColumns,
    load_mapper,
    match_gene_columns,
)

UNITS_PER_YEAR = {"days": 365.25, "months": 12.0, "years": 1.0}
MAX_PLAUSIBLE_YEARS = 50.0  # a longest follow-up above this means the time unit is wrong
MIN_PLAUSIBLE_YEARS = 1.0  # a longest follow-up below this (for a cohort) means the time unit is wrong
MAX_LISTED_COLUMNS = 10  # column names shown in a message
MAX_NAME_CHARS = 40  # longer column names are cut in messages
TRUE_WORDS = {"1", "1.0", "true", "t", "yes", "y"}
FALSE_WORDS = {"0", "0.0", "false", "f", "no", "n"}


@dataclass(frozen=True)
class SurvivalData:
    """Follow-up time (years) and event indicator, one entry per patient."""

    time: np.ndarray
    event: np.ndarray

    @property
    def n(self) -> int:
        return int(self.time.size)

    @property
    def n_events(self) -> int:
        return int(self.event.sum())


def column_list(frame: pd.DataFrame) -> str:
    """The first few column names for a message, long names cut."""
    names = [c if len(c) <= MAX_NAME_CHARS else c[: MAX_NAME_CHARS - 3] + "..." for c in frame.columns]
    more = ", ..." if len(names) > MAX_LISTED_COLUMNS else ""
    return ", ".join(names[:MAX_LISTED_COLUMNS]) + more


def require_columns(
    frame: pd.DataFrame, columns: Sequence[str], path: Path | None, what: str = "column"
) -> None:
    """Raise naming the first missing column, a close match, and the columns that are there."""
    for column in columns:
        if column in frame.columns:
            continue
        close = difflib.get_close_matches(column, list(frame.columns), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise TableError(
            f"{what} '{column}' not found{hint}; the table has {frame.shape[1]} columns: {column_list(frame)}",
            path,
            "Pass the exact column name.",
        )


def parse_time(series: pd.Series, name: str, path: Path | None) -> np.ndarray:
    """Numeric, finite, non-negative times."""
    values = pd.to_numeric(series, errors="coerce")
    bad = int(values.isna().sum())
    if bad:
        raise TableError(
            f"time column '{name}' has {bad} non-numeric or empty value(s)",
            path,
            "Give a number in every row.",
        )
    array = values.to_numpy(dtype=float)
    if not np.isfinite(array).all():
        raise TableError(f"time column '{name}' has infinite values", path, "Give finite follow-up times.")
    negative = int((array < 0).sum())
    if negative:
        raise TableError(
            f"time column '{name}' has {negative} negative value(s)", path, "Follow-up times must be >= 0."
        )
    return array


def parse_event(series: pd.Series, name: str, path: Path | None) -> np.ndarray:
    """Events as booleans from 0/1, True/False (also as text)."""
    if series.dtype == bool:
        return series.to_numpy(dtype=bool)
    text = series.astype(str).str.strip().str.lower()
    ok = text.isin(TRUE_WORDS | FALSE_WORDS) & series.notna()
    if not ok.all():  # counts only: the values could be patient identifiers
        raise TableError(
            f"event column '{name}' must be 0/1 or true/false; found {int((~ok).sum())} other value(s) "
            f"in {series.size} rows",
            path,
            "Check that it is the event column, and code events as 1 (event) or 0 (censored).",
        )
    return text.isin(TRUE_WORDS).to_numpy()


def check_time_unit(unit: str) -> None:
    """A known unit of follow-up time (days, months, years), else an OptionError naming ``time_unit``."""
    if unit not in UNITS_PER_YEAR:
        raise OptionError(
            f"'{unit}' is not days, months or years", fix="Use days, months or years.", option="time_unit"
        )


def to_years(time: np.ndarray, unit: str, path: Path | None, name: str) -> np.ndarray:
    """Convert to years and check the longest follow-up is plausible for the stated unit."""
    check_time_unit(unit)
    years = time / UNITS_PER_YEAR[unit]
    longest = float(years.max())
    if longest > MAX_PLAUSIBLE_YEARS:
        raise TableError(
            f"time unit mismatch: with --time-unit {unit}, the longest follow-up in '{name}' is {longest:.0f} years",
            path,
            "Pass the unit the times are recorded in (days, months or years).",
        )
    if longest < MIN_PLAUSIBLE_YEARS:
        raise TableError(
            f"time unit mismatch: with --time-unit {unit}, the longest follow-up in '{name}' is {longest:.2f} years",
            path,
            "Pass the unit the times are recorded in (days, months or years).",
        )
    return years


def survival_data(
    frame: pd.DataFrame, time_col: str, event_col: str, time_unit: str, path: Path | None, min_events: int = 0
) -> SurvivalData:
    """Validated survival columns, time in years."""
    require_columns(frame, [time_col, event_col], path)
    time = to_years(parse_time(frame[time_col], time_col, path), time_unit, path, time_col)
    event = parse_event(frame[event_col], event_col, path)
    if int(event.sum()) < min_events:
        raise TableError(
            f"only {int(event.sum())} event(s) in '{event_col}'; at least {min_events} are needed",
            path,
            "Use a larger cohort (a Cox model needs about 10 events per predictor to be stable).",
        )
    return SurvivalData(time=time, event=event)


def match_genes(frame: pd.DataFrame, genes: Sequence[str], path: Path | None) -> ColumnMatch:
    """Column of each gene (its symbol, ``rna_<symbol>``, or an older symbol of the same gene) and the renames.

    Column names go through the same alias table as signatures, so old and current symbols mix freely;
    two columns holding one gene, or a gene with no column, are a :class:`TableError`.
    """
    try:
        match = match_gene_columns(list(frame.columns), genes, load_mapper())
    except DuplicateGeneColumns as exc:
        raise TableError(exc.message, path, exc.fix) from None
    if match.missing:
        missing = match.missing
        raise TableError(
            f"{len(missing)} signature gene(s) not in the table: {', '.join(missing[:10])}"
            + (", ..." if len(missing) > 10 else ""),
            path,
            "Add a column per signature gene (current or older HGNC symbol), or use a signature file with the "
            "genes you have.",
        )
    return match


def gene_columns(frame: pd.DataFrame, genes: Sequence[str], path: Path | None) -> dict[str, str]:
    """Column of each gene (see :func:`match_genes`)."""
    return match_genes(frame, genes, path).columns


def renamed_note(renamed: Sequence[tuple[str, str]]) -> str | None:
    """One sentence listing table columns read under their current symbol, or None."""
    if not renamed:
        return None
    pairs = ", ".join(f"{old} as {new}" for old, new in renamed)
    return f"table columns read under their current gene symbol: {pairs}"


def numeric_block(frame: pd.DataFrame, columns: Sequence[str], path: Path | None, what: str) -> np.ndarray:
    """A float matrix of the given columns; NaN, infinite or non-numeric cells are an error."""
    out = np.empty((len(frame), len(columns)))
    for j, column in enumerate(columns):
        series = frame[column]
        if series.dtype == bool:
            values = series.astype(float)
        else:
            values = pd.to_numeric(series, errors="coerce")
            text_bad = values.isna() & series.notna()
            if text_bad.any():
                raise TableError(
                    f"{what} '{column}' is not numeric ({int(text_bad.sum())} non-numeric value(s))",
                    path,
                    "Encode it as numbers (for a category, one 0/1 column per level).",
                )
        array = values.to_numpy(dtype=float)
        bad = int((~np.isfinite(array)).sum())
        if bad:
            raise TableError(
                f"{what} '{column}' has {bad} missing or non-finite value(s)",
                path,
                "Impute or drop those rows before calibrating.",
            )
        out[:, j] = array
    return out
