"""Map gene symbols (as published, often renamed since) to the symbols of the SEQUOIA gene list.

A symbol is kept if it is in the list; otherwise its current HGNC symbol from the bundled alias table
(``data/symbol_aliases.csv``, old symbol -> current symbol with the Entrez ID that links them) is used if
that is in the list; otherwise a case-insensitive match is tried (``esr1`` -> ``ESR1``); otherwise the
gene is unmapped. No network look-up is ever made. :func:`match_gene_columns` applies the same mapping to
the column names of a table, so a table and a signature that use any mix of old and current symbols agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sequoia_clinic.errors import SignatureError
from sequoia_clinic.locations import package_path, sequoia_gene_list

GENE_LIST_CSV = sequoia_gene_list()  # shipped in the package (sequoia_clinic/locations.py)
DATA_DIR = package_path("sequoia_clinic.signatures", "data")
ALIASES_CSV = DATA_DIR / "symbol_aliases.csv"


def sequoia_genes(path: Path = GENE_LIST_CSV) -> tuple[str, ...]:
    """The genes SEQUOIA predicts, in output order (header ``gene``)."""
    try:
        frame = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError) as exc:
        raise SignatureError(
            f"cannot read the gene list ({exc})", path, "Reinstall sequoia-clinic."
        ) from None
    if "gene" not in frame.columns:
        raise SignatureError("the gene list has no 'gene' column", path, "Reinstall sequoia-clinic.")
    return tuple(frame["gene"].dropna().astype(str))


@dataclass(frozen=True)
class GeneMapper:
    """Maps a published symbol to a SEQUOIA symbol, or to None when no justified mapping exists."""

    known: frozenset[str]
    aliases: dict[str, str] = field(hash=False)  # old symbol -> current HGNC symbol
    by_upper: dict[str, str] = field(hash=False)  # upper-case symbol -> symbol in the list

    def map(self, symbol: str) -> str | None:
        symbol = symbol.strip()
        if symbol in self.known:
            return symbol
        current = self.aliases.get(symbol)
        if current is not None and current in self.known:
            return current
        upper = symbol.upper()
        if upper in self.by_upper:
            return self.by_upper[upper]
        for old, new in self.aliases.items():
            if old.upper() == upper and new in self.known:
                return new
        return None


def load_mapper(gene_list: Path = GENE_LIST_CSV, aliases_csv: Path = ALIASES_CSV) -> GeneMapper:
    """Build the mapper from the bundled gene list and alias table."""
    genes = sequoia_genes(gene_list)
    table = pd.read_csv(aliases_csv, dtype=str)
    aliases = dict(zip(table["old_symbol"], table["current_symbol"], strict=True))
    return GeneMapper(frozenset(genes), aliases, {g.upper(): g for g in genes})


@dataclass(frozen=True)
class ColumnMatch:
    """Which table column holds each wanted gene, and the columns read under another symbol."""

    columns: dict[str, str] = field(hash=False)  # SEQUOIA symbol -> column name
    renamed: tuple[tuple[str, str], ...]  # (column's symbol, SEQUOIA symbol), each pair once
    missing: tuple[str, ...]  # wanted genes with no column


class DuplicateGeneColumns(SignatureError):
    """Two table columns name the same gene (e.g. ``GOLPH2`` and ``GOLM1``)."""

    def __init__(self, gene: str, first: str, second: str) -> None:
        super().__init__(
            f"columns '{first}' and '{second}' both hold gene {gene}",
            fix="Keep one column per gene (old and current symbols of one gene are the same gene).",
        )
        self.gene, self.first, self.second = gene, first, second


def column_symbol(column: str) -> str:
    """The gene symbol a column names: ``rna_<symbol>`` (SEQUOIA's reference files) or the name itself."""
    return column[4:] if column.startswith("rna_") else column


def match_gene_columns(columns: Sequence[str], genes: Sequence[str], mapper: GeneMapper) -> ColumnMatch:
    """Find each of ``genes`` (SEQUOIA symbols) among ``columns``, mapping column names through the alias table.

    A column is read as gene G when its symbol (``rna_`` prefix removed) is G or maps to G (an older symbol,
    a different case). Two columns mapping to the same wanted gene raise :class:`DuplicateGeneColumns`.
    """
    wanted = set(genes)
    found: dict[str, str] = {}
    renamed: list[tuple[str, str]] = []
    for column in columns:
        symbol = column_symbol(str(column))
        gene = symbol if symbol in wanted else mapper.map(symbol)
        if gene is None or gene not in wanted:
            continue
        if gene in found:
            raise DuplicateGeneColumns(gene, found[gene], str(column))
        found[gene] = str(column)
        if symbol != gene:
            renamed.append((symbol, gene))
    ordered = {g: found[g] for g in genes if g in found}
    missing = tuple(g for g in genes if g not in found)
    return ColumnMatch(ordered, tuple(dict.fromkeys(renamed)), missing)
