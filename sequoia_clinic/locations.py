"""Where the product's files live: read-only data inside the installed package, and the user's cache folder.

Read-only data is found with :mod:`importlib.resources` in the installed package, so the same code works in
the editable install the Makefile makes and in a regular (wheel) install, and never writes there. The
repository's top-level ``models/`` (shipped bundles and the default risk model) and ``templates/`` (report
text) are installed as the packages ``sequoia_clinic._models`` and ``sequoia_clinic._templates``
(``package-dir`` in pyproject.toml); the rest lives inside ``sequoia_clinic/``.

Files written at run time (the per-slide feature cache, the demo bundle's generated weights) go to the user
cache: :func:`default_cache_dir` is the one function that reads the environment for it, called at the CLI
boundary to fill :class:`~sequoia_clinic.settings.Settings`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

MODELS_PACKAGE = "sequoia_clinic._models"  # the repository's models/
TEMPLATES_PACKAGE = "sequoia_clinic._templates"  # the repository's templates/
DEFAULT_RISK_MODEL_FILE = "gse7390-wang76.json"


def package_path(package: str, *parts: str) -> Path:
    """A file or folder shipped in ``package`` (a regular package, installed as plain files)."""
    resource = resources.files(package).joinpath(*parts)
    if not isinstance(resource, Path):  # e.g. a zipped install: the product reads its data by path
        raise RuntimeError(f"{package} is not installed as plain files; reinstall it with pip")
    return resource


def models_dir() -> Path:
    """The shipped bundles (``sequoia-brca-demo``) and risk models (``risk/``): the repository's ``models/``."""
    return package_path(MODELS_PACKAGE)


def templates_dir() -> Path:
    """The shipped report text (``report.toml``): the repository's ``templates/``."""
    return package_path(TEMPLATES_PACKAGE)


def default_risk_model() -> Path:
    """The shipped default risk model (wang76 on GSE7390; ``models/risk/README.md``)."""
    return models_dir() / "risk" / DEFAULT_RISK_MODEL_FILE


def sequoia_gene_list() -> Path:
    """The 20,820 SEQUOIA genes in output order (gevaertlab/sequoia-pub, MIT): the demo bundle's ``genes.csv``."""
    return models_dir() / "sequoia-brca-demo" / "genes.csv"


def demo_slide() -> Path:
    """OpenSlide's CMU-1-Small-Region (CC0; ``sequoia_clinic/demo/ATTRIBUTION.md``)."""
    return package_path("sequoia_clinic", "demo", "CMU-1-Small-Region.svs")


def default_cache_dir() -> Path:
    """``$SEQUOIA_CLINIC_CACHE``, else ``$XDG_CACHE_HOME/sequoia-clinic``, else ``~/.cache/sequoia-clinic``.

    The only place that reads the environment for a folder; call it at the boundary (CLI) only.
    """
    if os.environ.get("SEQUOIA_CLINIC_CACHE"):
        return Path(os.environ["SEQUOIA_CLINIC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sequoia-clinic"


def weights_cache_dir(cache_dir: Path) -> Path:
    """Where generated (recipe-made) bundle weights live inside a cache folder."""
    return cache_dir / "weights"
