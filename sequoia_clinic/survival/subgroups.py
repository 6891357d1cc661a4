"""Performance in declared subgroups (TRIPOD+AI item 14): ``calibrate --subgroup SPEC``.

A SPEC is ``COLUMN`` (one level per value of a categorical column of the cohort table) or
``COLUMN:CUT[/CUT...]`` (numeric bands, e.g. ``age:50`` -> "age < 50", "age ≥ 50"). For every level,
:func:`subgroup_performance` reports n, events and Harrell's C of the out-of-fold linear predictor of the
first CV repeat with a seeded percentile-bootstrap 95% CI over the level's patients. A level with fewer
than :data:`MIN_EVENTS` events or fewer than 2 comparable pairs gets C = None with a note. Rows hold
counts and C only, never patient values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sksurv.metrics import concordance_index_censored

from sequoia_clinic.errors import OptionError
from sequoia_clinic.survival.records import SubgroupPerformance, finite_or_none

OPTION = "subgroup"
MIN_EVENTS = 10  # fewer events in a level: C is not estimated
MAX_LEVELS = 20  # a categorical subgroup column with more distinct values needs cuts
BOOTSTRAP_MAX = 200  # resamples per level (at most; fewer when the run's --bootstrap is smaller)


@dataclass(frozen=True)
class SubgroupSpec:
    """One declared subgroup: a table column, and numeric cut-offs (empty: a categorical column)."""

    column: str
    cuts: tuple[float, ...] = ()

    def describe(self) -> str:
        return self.column + (":" + "/".join(f"{c:g}" for c in self.cuts) if self.cuts else "")


@dataclass(frozen=True)
class SubgroupLevel:
    """One level of a subgroup: its label and which table rows belong to it."""

    subgroup: str
    level: str
    mask: np.ndarray


def parse_subgroup(text: str) -> SubgroupSpec:
    """``COLUMN`` or ``COLUMN:CUT[/CUT...]`` (cuts strictly increasing numbers)."""
    column, colon, cut_text = text.strip().partition(":")
    column = column.strip()
    if not column:
        raise OptionError(
            f"'{text}' is not COLUMN or COLUMN:CUT[/CUT...]", fix="E.g. age:50 or er.", option=OPTION
        )
    if not colon:
        return SubgroupSpec(column)
    try:
        cuts = tuple(float(c) for c in cut_text.split("/"))
    except ValueError:
        raise OptionError(
            f"'{text}': the cut-offs must be numbers separated by '/'", fix="E.g. age:50/65.", option=OPTION
        ) from None
    if not all(math.isfinite(c) for c in cuts) or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
        raise OptionError(
            f"'{text}': the cut-offs must be finite and increasing", fix="E.g. age:50/65.", option=OPTION
        )
    return SubgroupSpec(column, cuts)


def parse_subgroups(texts: Sequence[str]) -> tuple[SubgroupSpec, ...]:
    """The ``--subgroup`` options in order; a column declared twice is an error."""
    specs = tuple(parse_subgroup(t) for t in texts)
    columns = [s.column for s in specs]
    if len(set(columns)) != len(columns):
        raise OptionError("a subgroup column is declared twice", fix="Give each column once.", option=OPTION)
    return specs


def _label(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bands(values: pd.Series, spec: SubgroupSpec) -> list[SubgroupLevel]:
    x, col, cuts = values.to_numpy(dtype=float), spec.column, spec.cuts
    edges = [-math.inf, *cuts, math.inf]
    levels = []
    for low, high in zip(edges, edges[1:], strict=False):
        if low == -math.inf:
            label = f"{col} < {high:g}"
        elif high == math.inf:
            label = f"{col} ≥ {low:g}"
        else:
            label = f"{low:g} ≤ {col} < {high:g}"
        levels.append(SubgroupLevel(spec.describe(), label, (x >= low) & (x < high)))
    return levels


def _categories(values: pd.Series, spec: SubgroupSpec, path: Path | None) -> list[SubgroupLevel]:
    present = values.dropna()
    distinct = sorted(present.unique(), key=lambda v: (str(type(v)), v))
    if len(distinct) > MAX_LEVELS:
        raise OptionError(
            f"subgroup column '{spec.column}' has {len(distinct)} distinct values",
            path,
            f"Give numeric cut-offs, e.g. {spec.column}:50, or a column with at most {MAX_LEVELS} levels.",
            option=OPTION,
        )
    return [
        SubgroupLevel(spec.describe(), f"{spec.column} = {_label(v)}", (values == v).to_numpy())
        for v in distinct
    ]


def subgroup_levels(
    frame: pd.DataFrame, specs: Sequence[SubgroupSpec], path: Path | None = None
) -> tuple[SubgroupLevel, ...]:
    """The levels of every declared subgroup (rows with a missing value form a '<column> missing' level)."""
    levels: list[SubgroupLevel] = []
    for spec in specs:
        if spec.column not in frame.columns:
            raise OptionError(
                f"subgroup column '{spec.column}' not found in the table",
                path,
                "Check the column name (case matters).",
                option=OPTION,
            )
        values = frame[spec.column]
        if spec.cuts:
            if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                raise OptionError(
                    f"subgroup column '{spec.column}' is not numeric, so it cannot be cut",
                    path,
                    f"Declare it without cut-offs (--subgroup {spec.column}) to use its categories.",
                    option=OPTION,
                )
            levels += _bands(values, spec)
        else:
            levels += _categories(values, spec, path)
        missing = values.isna().to_numpy()
        if missing.any():
            levels.append(SubgroupLevel(spec.describe(), f"{spec.column} missing", missing))
    return tuple(levels)


def _harrell(time: np.ndarray, event: np.ndarray, lp: np.ndarray) -> tuple[float, int]:
    """Harrell's C and the number of comparable pairs; (NaN, 0) where sksurv finds none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c, concordant, discordant, tied_risk, _ = concordance_index_censored(event, time, lp)
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return float("nan"), 0
    return float(c), int(concordant + discordant + tied_risk)


def _level_row(
    level: SubgroupLevel,
    time: np.ndarray,
    event: np.ndarray,
    lp: np.ndarray,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> SubgroupPerformance:
    t, e, x = time[level.mask], event[level.mask], lp[level.mask]
    n, events = int(t.size), int(e.sum())
    c, pairs = _harrell(t, e, x) if n else (float("nan"), 0)
    note = None
    if events < MIN_EVENTS:
        note = f"C not estimated: {events} event(s), fewer than {MIN_EVENTS}"
    elif pairs < 2:
        note = f"C not estimated: {pairs} comparable pair(s)"
    if note is not None:
        return SubgroupPerformance(level.subgroup, level.level, n, events, None, None, None, 0, note)
    draws = []
    for _ in range(n_bootstrap):
        index = rng.integers(0, n, n)
        draws.append(_harrell(t[index], e[index], x[index])[0])
    valid = np.asarray(draws)[np.isfinite(draws)]
    return SubgroupPerformance(
        subgroup=level.subgroup,
        level=level.level,
        n=n,
        events=events,
        harrell_c=finite_or_none(c),
        ci_lower=finite_or_none(np.percentile(valid, 2.5)) if valid.size else None,
        ci_upper=finite_or_none(np.percentile(valid, 97.5)) if valid.size else None,
        bootstrap_valid=int(valid.size),
        note=None,
    )


def subgroup_performance(
    levels: Sequence[SubgroupLevel],
    time: np.ndarray,
    event: np.ndarray,
    lp: np.ndarray,
    n_bootstrap: int,
    seed: int,
) -> tuple[SubgroupPerformance, ...]:
    """Per level: n, events, Harrell's C of the out-of-fold ``lp`` and its seeded bootstrap 95% CI."""
    rng = np.random.default_rng(seed)
    return tuple(_level_row(level, time, event, lp, n_bootstrap, rng) for level in levels)
