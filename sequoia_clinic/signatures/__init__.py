"""Breast-cancer gene signatures (registry + user CSV files), mapped to SEQUOIA gene symbols."""

from sequoia_clinic.signatures.mapping import (
    ColumnMatch,
    DuplicateGeneColumns,
    GeneMapper,
    load_mapper,
    match_gene_columns,
    sequoia_genes,
)
from sequoia_clinic.signatures.probes import collapse_probes
from sequoia_clinic.signatures.registry import Signature, get_signature, load_signature_file

__all__ = [
    "ColumnMatch",
    "DuplicateGeneColumns",
    "GeneMapper",
    "Signature",
    "collapse_probes",
    "get_signature",
    "load_mapper",
    "load_signature_file",
    "match_gene_columns",
    "sequoia_genes",
]
