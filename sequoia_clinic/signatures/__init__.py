"""Breast-cancer gene signatures (registry + user CSV files), mapped to SEQUOIA gene symbols."""

from sequoia_clinic.signatures.formulas import SignatureScore, score_signature
from sequoia_clinic.signatures.mapping import GeneMapper, load_mapper, sequoia_genes
from sequoia_clinic.signatures.probes import collapse_probes
from sequoia_clinic.signatures.registry import Signature, get_signature, list_signatures, load_signature_file

__all__ = [
    "GeneMapper",
    "Signature",
    "SignatureScore",
    "collapse_probes",
    "get_signature",
    "list_signatures",
    "load_mapper",
    "load_signature_file",
    "score_signature",
    "sequoia_genes",
]
