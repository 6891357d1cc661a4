"""Map gene symbols (as published, often renamed since) to the symbols of the SEQUOIA gene list.

A symbol is kept if it is in the list; otherwise its current HGNC symbol from the bundled alias table
(``data/symbol_aliases.csv``, old symbol -> current symbol with the Entrez ID that links them) is used if
that is in the list; otherwise a case-insensitive match is tried (``esr1`` -> ``ESR1``); otherwise the
gene is unmapped. No network look-up is ever made.
"""

from __future__ import annotations

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
