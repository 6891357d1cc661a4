"""Breast-cancer gene signatures (registry + user CSV files), mapped to SEQUOIA gene symbols."""

from sequoia_clinic.signatures.mapping import GeneMapper, load_mapper, sequoia_genes
from sequoia_clinic.signatures.probes import collapse_probes
from sequoia_clinic.signatures.registry import Signature, get_signature, load_signature_file

__all__ = [
    "GeneMapper",
    "Signature",
    "collapse_probes",
    "get_signature",
    "load_mapper",
    "load_signature_file",
    "sequoia_genes",
]
