"""Read-only data is found in the installed package; the user cache folder comes from the environment."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import sequoia_clinic
from sequoia_clinic.locations import (
    default_cache_dir,
    default_risk_model,
    demo_slide,
    models_dir,
    package_path,
    sequoia_gene_list,
    templates_dir,
    weights_cache_dir,
)

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_editable_install_reads_the_repositorys_data_folders():
    assert models_dir() == REPO / "models" and templates_dir() == REPO / "templates"
    assert default_risk_model() == REPO / "models" / "risk" / "gse7390-wang76.json"
    assert sequoia_gene_list() == REPO / "models" / "sequoia-brca-demo" / "genes.csv"
    assert demo_slide() == Path(sequoia_clinic.__file__).parent / "demo" / "CMU-1-Small-Region.svs"


def test_every_shipped_data_file_is_there():
    files = [
        templates_dir() / "report.toml",
        default_risk_model(),
        default_risk_model().with_name("gse7390-wang76.card.md"),
        models_dir() / "sequoia-brca-demo" / "manifest.json",
        sequoia_gene_list(),
        demo_slide(),
        package_path("sequoia_clinic", "schemas", "result.schema.json"),
        package_path("sequoia_clinic.bundles", "manifest.schema.json"),
        package_path("sequoia_clinic.signatures", "data", "registry.json"),
        package_path("sequoia_clinic.signatures", "data", "symbol_aliases.csv"),
    ]
    assert [f for f in files if not f.is_file()] == []
    assert sequoia_gene_list().read_text().splitlines()[0] == "gene"
    assert len(sequoia_gene_list().read_text().splitlines()) == 20821


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQUOIA_CLINIC_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("SEQUOIA_CLINIC_CACHE", "")
    assert default_cache_dir() == tmp_path / "xdg" / "sequoia-clinic"
    monkeypatch.delenv("SEQUOIA_CLINIC_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "sequoia-clinic"
    assert (
        weights_cache_dir(default_cache_dir()) == tmp_path / "home" / ".cache" / "sequoia-clinic" / "weights"
    )


def test_version_comes_from_the_installed_metadata():
    assert sequoia_clinic.__version__ == metadata.version("sequoia-clinic") == PYPROJECT["project"]["version"]


def test_pyproject_lists_every_package_folder():
    """Automatic discovery cannot map models/ and templates/, so the list is explicit: it must stay complete."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    mapped = PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert mapped == {"sequoia_clinic._models": "models", "sequoia_clinic._templates": "templates"}
    found = {"sequoia_clinic._models", "sequoia_clinic._models.risk", "sequoia_clinic._templates"}
    for folder in [REPO / "sequoia_clinic", *(REPO / "sequoia_clinic").rglob("*")]:
        parts = folder.relative_to(REPO).parts
        if folder.is_dir() and all(p.isidentifier() and p != "__pycache__" for p in parts):
            if any(child.is_file() for child in folder.iterdir()):
                found.add(".".join(parts))
    assert listed == found
