"""Model bundles: a folder with a checksummed manifest, encoder weights, aggregator folds and a gene list.

Public API: :func:`load_bundle`, :func:`scan_bundles`, :func:`verify_bundle`, :func:`import_bundle` and the
:class:`Bundle` record; :func:`load_bundle_encoder` / :func:`load_bundle_ensemble` give the runnable models.
"""

from sequoia_clinic.bundles.importer import import_bundle
from sequoia_clinic.bundles.manifest import (
    BUNDLE_FORMAT,
    MANIFEST_NAME,
    Bundle,
    FileRef,
    FoldRef,
    Preprocessing,
    parse_bundle,
    read_gene_list,
)
from sequoia_clinic.bundles.store import (
    SHIPPED_MODELS,
    BundleListing,
    FileCheck,
    VerifyReport,
    load_bundle,
    load_bundle_encoder,
    load_bundle_ensemble,
    materialize,
    resolve_bundle_path,
    scan_bundles,
    search_dirs,
    verify_bundle,
    verify_encoder_weights,
)

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_NAME",
    "SHIPPED_MODELS",
    "Bundle",
    "BundleListing",
    "FileCheck",
    "FileRef",
    "FoldRef",
    "Preprocessing",
    "VerifyReport",
    "import_bundle",
    "load_bundle",
    "load_bundle_encoder",
    "load_bundle_ensemble",
    "materialize",
    "parse_bundle",
    "read_gene_list",
    "resolve_bundle_path",
    "scan_bundles",
    "search_dirs",
    "verify_bundle",
    "verify_encoder_weights",
]
