"""Where the product's data folders live: ``models/`` (bundles, risk models) and ``templates/`` (report text).

In a source checkout, and in the editable install the Makefile makes, they sit beside the ``sequoia_clinic``
package. A regular (non-editable) ``pip install`` copies them to ``<prefix>/share/sequoia-clinic/`` (the
``data-files`` of pyproject.toml). The checkout wins when both exist; when neither does, the checkout path is
returned so that error messages name the place the files were expected.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

SHARE_NAME = "sequoia-clinic"
MARKER = Path("templates") / "report.toml"  # present in every complete data root


def candidate_roots() -> list[Path]:
    """The source checkout, then the install prefixes' ``share/sequoia-clinic``."""
    roots = [Path(__file__).resolve().parents[1]]
    for prefix in (sysconfig.get_path("data"), sys.prefix):
        root = Path(prefix) / "share" / SHARE_NAME
        if root not in roots:
            roots.append(root)
    return roots


def data_root(candidates: list[Path] | None = None) -> Path:
    """The first candidate root holding the data files (see the module docstring)."""
    roots = candidate_roots() if candidates is None else candidates
    return next((root for root in roots if (root / MARKER).is_file()), roots[0])


def models_dir() -> Path:
    return data_root() / "models"


def templates_dir() -> Path:
    return data_root() / "templates"
