"""Measured expression tables for training and evaluation: reading, gene symbols, transform, checks.

Two layouts are read (CSV, TSV or Parquet):

* the reference format: one row per slide with ``wsi_file_name`` and ``patient_id`` and one ``rna_<GENE>``
  column per gene (sequoia-pub README, ``examples/ref_file.csv``);
* a plain wide table: ``patient_id`` (rows are patients) or ``slide_id`` (rows are slides, with an
  optional ``patient_id``), then one numeric column per gene.

With any ``rna_`` column, only the ``rna_`` columns are genes (prefix removed, as the reference does);
otherwise every column except the id columns (:data:`ID_COLUMNS`) is a gene. Rows keyed by slide
(``slide_id`` or ``wsi_file_name``) are matched to manifest slide ids, also with the file extension removed
(``TCGA-…-DX1.svs`` matches ``TCGA-…-DX1``).

Gene symbols are mapped with the project's alias table (:class:`~sequoia_clinic.signatures.GeneMapper`: the
symbol itself if SEQUOIA predicts it, else its current HGNC symbol, else a case-insensitive match; other
symbols are kept as given). Columns that map to the same symbol are **averaged** and reported. The declared
transform is applied (``log2p1``: log2(x + 1), which needs x ≥ 0; ``none``). NaN or infinite values are
refused. Constant genes are dropped by the caller once the samples are known (:func:`drop_constant`).

Tables are read within :data:`EXPRESSION_LIMITS` and only their id columns (text) and gene columns (float64)
are parsed: other columns are never materialised, a cell of a gene column that is not a number is refused
naming the column and data row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from sequoia_clinic.errors import InputPathError, TableError
from sequoia_clinic.fileio import (
    ColumnType,
    TableFormat,
    TableLimits,
    read_table_columns,
    read_table_header,
    table_format,
)
from sequoia_clinic.signatures.mapping import GeneMapper

ID_COLUMNS = ("patient_id", "slide_id", "wsi_file_name", "tcga_project", "slide", "mpp", "fold")
SLIDE_KEYS = ("slide_id", "wsi_file_name")
TEXT_ID_COLUMNS = ("patient_id", *SLIDE_KEYS)  # the id columns read (as text); other id columns are skipped
TAB_SUFFIXES = (".tsv", ".txt")
# An expression table may be wide (20,820 genes x ~1,100 TCGA slides is ~250 MB of CSV): a larger byte limit
# than cohort tables, the same column and row limits. Only id and gene columns are parsed, as float64.
EXPRESSION_LIMITS = TableLimits(max_bytes=1 << 30, max_columns=100_000, max_rows=1_000_000)
PREFIX = "rna_"
SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
MAX_LISTED = 5


class Transform(StrEnum):
    """What is applied to the table's values before training (recorded in the bundle)."""

    LOG2P1 = "log2p1"  # log2(x + 1), e.g. FPKM-UQ -> log2(FPKM-UQ + 1) as SEQUOIA reportedly trained
    NONE = "none"  # values used as given (already on the scale the model should predict)


@dataclass(frozen=True)
class GeneHandling:
    """What happened to the table's gene columns (reported to the user and stored in the bundle)."""

    columns: int  # gene columns in the table
    renamed: tuple[tuple[str, str], ...]  # (as given, symbol used)
    merged: tuple[tuple[str, tuple[str, ...]], ...]  # (symbol, the columns averaged into it)
    constant_dropped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "columns": self.columns,
            "renamed": [list(pair) for pair in self.renamed],
            "merged": [{"gene": gene, "columns": list(cols)} for gene, cols in self.merged],
            "constant_dropped": list(self.constant_dropped),
        }


@dataclass(frozen=True, eq=False)
class ExpressionTable:
    """Measured expression after mapping, merging and the transform: rows × genes, float64."""

    path: Path
    patients: tuple[str, ...]  # patient of each row
    slide_ids: tuple[str, ...] | None  # None: rows are patients
    genes: tuple[str, ...]
    values: np.ndarray
    transform: Transform
    handling: GeneHandling

    @property
    def keyed_by(self) -> str:
        return "patient" if self.slide_ids is None else "slide"


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def _format(path: Path, what: str) -> TableFormat:
    """The table's reading plan after the suffix and size checks."""
    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"{what} not found", path, fix="Check the path.")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TableError(f"unsupported {what} type '{suffix}'", path, fix="Use .csv, .tsv or .parquet.")
    return table_format(path, what, EXPRESSION_LIMITS, TAB_SUFFIXES)


def _gene_names(header: Sequence[str], path: Path) -> list[str]:
    """The gene columns of a (stripped) header: the ``rna_`` columns if any, else every non-id column."""
    prefixed = [c for c in header if c.startswith(PREFIX)]
    columns = prefixed if prefixed else [c for c in header if c not in ID_COLUMNS]
    if not columns:
        raise TableError(
            "the expression table has no gene columns",
            path,
            fix="Give one column per gene (reference format: rna_<GENE>).",
        )
    return columns


def read_table(
    path: Path,
    what: str = "expression table",
    mapper: GeneMapper | None = None,
    genes: Collection[str] | None = None,
) -> pd.DataFrame:
    """The id columns and the gene columns of an expression table, typed (ids text, genes float64).

    With ``genes`` (symbols) and a ``mapper``, only the gene columns whose symbol is one of them are read.
    Other columns (``tcga_project``, ``mpp``, notes, ...) are never parsed. Column names are stripped.
    """
    fmt = _format(path, what)
    raw = read_table_header(fmt)
    names = {name.strip(): name for name in reversed(raw)}  # stripped -> as in the file (first kept)
    stripped = list(dict.fromkeys(name.strip() for name in raw))
    columns = _gene_names(stripped, fmt.path)
    if genes is not None and mapper is not None:
        symbols, _ = _map_symbols(columns, mapper)
        wanted = set(genes)
        columns = [c for c, symbol in zip(columns, symbols, strict=True) if symbol in wanted]
    plan = {names[c]: ColumnType.TEXT for c in TEXT_ID_COLUMNS if c in names}
    plan.update({names[c]: ColumnType.NUMBER for c in columns})
    frame = read_table_columns(fmt, plan, raw)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _ids(frame: pd.DataFrame, column: str, path: Path) -> tuple[str, ...]:
    values = frame[column]
    if values.isna().any() or (values.astype(str).str.strip() == "").any():
        raise TableError(f"the expression table has empty {column} values", path)
    return tuple(values.astype(str).str.strip())


def _gene_columns(frame: pd.DataFrame, path: Path, restricted: bool) -> list[str]:
    columns = [c for c in frame.columns if c not in TEXT_ID_COLUMNS]
    if not columns and not restricted:
        raise TableError(
            "the expression table has no gene columns",
            path,
            fix="Give one column per gene (reference format: rna_<GENE>).",
        )
    bad = [
        c
        for c in columns
        if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
    ]
    if bad:
        raise TableError(f"gene column(s) {_listing(bad)} are not numeric", path, fix="Give numbers only.")
    return columns


def _map_symbols(columns: Sequence[str], mapper: GeneMapper) -> tuple[list[str], list[tuple[str, str]]]:
    symbols, renamed = [], []
    for column in columns:
        given = column[len(PREFIX) :] if column.startswith(PREFIX) else column
        mapped = mapper.map(given) or given.strip()
        symbols.append(mapped)
        if mapped != given:
            renamed.append((given, mapped))
    return symbols, renamed


def _merge_duplicates(
    values: np.ndarray, symbols: Sequence[str], columns: Sequence[str]
) -> tuple[tuple[str, ...], np.ndarray, tuple[tuple[str, tuple[str, ...]], ...]]:
    """Average columns that map to the same symbol (first-occurrence order kept)."""
    groups: dict[str, list[int]] = {}
    for j, symbol in enumerate(symbols):
        groups.setdefault(symbol, []).append(j)
    genes = tuple(groups)
    if len(genes) == len(symbols):
        return genes, values, ()
    out = np.empty((values.shape[0], len(genes)))
    merged = []
    for k, (symbol, idx) in enumerate(groups.items()):
        out[:, k] = values[:, idx].mean(axis=1) if len(idx) > 1 else values[:, idx[0]]
        if len(idx) > 1:
            merged.append((symbol, tuple(columns[j] for j in idx)))
    return genes, out, tuple(merged)


def apply_transform(values: np.ndarray, transform: Transform, path: Path) -> np.ndarray:
    if transform is Transform.NONE:
        return values
    if (values < 0).any():
        raise TableError(
            "the expression table has negative values, so log2(x + 1) is undefined",
            path,
            fix="If the values are already on a log scale, pass --expression-transform none.",
        )
    return np.log2(values + 1.0)


def read_expression(
    path: Path, transform: Transform, mapper: GeneMapper, genes: Collection[str] | None = None
) -> ExpressionTable:
    """Read, check, map and transform an expression table (see the module docstring).

    Only the id columns and the gene columns are parsed; with ``genes`` (symbols, e.g. the predicted genes
    ``evaluate`` compares), only the gene columns that map to one of them (the table may then hold none).
    """
    path = Path(path)
    frame = read_table(path, mapper=mapper, genes=genes)
    slide_key = next((k for k in SLIDE_KEYS if k in frame.columns), None)
    if slide_key is None and "patient_id" not in frame.columns:
        raise TableError(
            "the expression table has neither a patient_id nor a slide_id column",
            path,
            fix="Name the id column patient_id (rows = patients) or slide_id (rows = slides).",
        )
    slide_ids = _ids(frame, slide_key, path) if slide_key is not None else None
    patients = _ids(frame, "patient_id", path) if "patient_id" in frame.columns else None
    keys = slide_ids if slide_ids is not None else patients
    assert keys is not None
    duplicated = sorted(k for k, count in Counter(keys).items() if count > 1)
    if duplicated:
        raise TableError(f"the expression table has duplicate rows for {_listing(duplicated)}", path)
    columns = _gene_columns(frame, path, restricted=genes is not None)
    values = frame[columns].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise TableError(
            f"the expression table has {int(bad.sum())} NaN or infinite value(s) "
            f"(first: row {keys[rows[0]]}, column {columns[cols[0]]})",
            path,
            fix="Fill or remove them before training; missing values are never imputed silently.",
        )
    values = apply_transform(values, transform, path)
    symbols, renamed = _map_symbols(columns, mapper)
    genes, values, merged = _merge_duplicates(values, symbols, columns)
    return ExpressionTable(
        path=path,
        patients=patients if patients is not None else keys,
        slide_ids=slide_ids,
        genes=genes,
        values=values,
        transform=transform,
        handling=GeneHandling(columns=len(columns), renamed=tuple(renamed), merged=merged),
    )


def strip_extension(name: str) -> str:
    """``TCGA-…-DX1.svs`` → ``TCGA-…-DX1`` (one known slide/feature extension removed)."""
    for suffix in (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".dcm", ".h5"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def drop_constant(table: ExpressionTable, rows: np.ndarray) -> ExpressionTable:
    """The table without genes that are constant over ``rows`` (the samples used); the drop is recorded."""
    used = table.values[rows]
    constant = np.ptp(used, axis=0) == 0
    if not constant.any():
        return table
    if constant.all():
        raise TableError(
            "every gene is constant over the matched samples", table.path, fix="Check the expression table."
        )
    dropped = tuple(g for g, c in zip(table.genes, constant, strict=True) if c)
    return replace(
        table,
        genes=tuple(g for g, c in zip(table.genes, constant, strict=True) if not c),
        values=table.values[:, ~constant],
        handling=replace(table.handling, constant_dropped=dropped),
    )
