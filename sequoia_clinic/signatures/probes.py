"""Collapse array-probe columns to gene-level columns for a probe-based signature (wang76, ggi, gene70).

A gene's value is the mean of its probes' values (all probes of one gene are on the same log2 scale on
one array). Probes without a gene symbol, or whose gene is not in the SEQUOIA list, are dropped (they are
listed in ``Signature.unmapped``).
"""

from __future__ import annotations

import pandas as pd

from sequoia_clinic.errors import TableError
from sequoia_clinic.signatures.registry import Signature


def collapse_probes(table: pd.DataFrame, signature: Signature, column_prefix: str = "") -> pd.DataFrame:
    """Gene-level table (one column per signature gene, mean of its probes) from probe columns.

    ``column_prefix`` is prepended to probe IDs to find the columns (``"X"`` for sksurv's GSE7390).
    """
    if not signature.probes:
        raise TableError(f"signature {signature.name} is not probe-based", fix="Use a gene-level table.")
    genes: dict[str, pd.Series] = {}
    for gene in signature.genes:
        columns = [f"{column_prefix}{probe}" for probe in signature.probes[gene]]
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise TableError(
                f"probe column {missing[0]} (gene {gene}) not in the table", fix="Check the probe prefix."
            )
        genes[gene] = table[columns].astype(float).mean(axis=1)
    return pd.DataFrame(genes, index=table.index)
