"""Model bundles: a folder with a checksummed manifest, encoder weights, aggregator folds and a gene list.

Public API: :func:`load_bundle`, :func:`list_bundles`, :func:`verify_bundle`, :func:`import_bundle` and the
:class:`Bundle` record; :func:`load_bundle_encoder` / :func:`load_bundle_ensemble` give the runnable models.
"""

from sequoia_clinic.bundles.importer import import_bundle, packaged_gene_list
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
    REPO_MODELS,
    BundleListing,
    FileCheck,
    VerifyReport,
    list_bundles,
    load_bundle,
    load_bundle_encoder,
    load_bundle_ensemble,
    materialize,
    resolve_bundle_path,
    scan_bundles,
    search_dirs,
    verify_bundle,
)

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_NAME",
    "REPO_MODELS",
    "Bundle",
    "BundleListing",
    "FileCheck",
    "FileRef",
    "FoldRef",
    "Preprocessing",
    "VerifyReport",
    "import_bundle",
    "list_bundles",
    "load_bundle",
    "load_bundle_encoder",
    "load_bundle_ensemble",
    "materialize",
    "packaged_gene_list",
    "parse_bundle",
    "read_gene_list",
    "resolve_bundle_path",
    "scan_bundles",
    "search_dirs",
    "verify_bundle",
]
