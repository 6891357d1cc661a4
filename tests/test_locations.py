"""Data folders are found in the checkout first, then in an install prefix's share/sequoia-clinic."""

from __future__ import annotations

from pathlib import Path

from sequoia_clinic.locations import MARKER, candidate_roots, data_root, models_dir, templates_dir


def _root(path: Path) -> Path:
    (path / MARKER).parent.mkdir(parents=True)
    (path / MARKER).write_text("# report text\n")
    return path


def test_the_checkout_wins_then_the_installed_share_folder(tmp_path):
    checkout, share = tmp_path / "checkout", tmp_path / "prefix" / "share" / "sequoia-clinic"
    assert data_root([checkout, share]) == checkout  # neither complete: errors name the checkout path
    _root(share)
    assert data_root([checkout, share]) == share  # a regular pip install
    _root(checkout)
    assert data_root([checkout, share]) == checkout  # a checkout or the Makefile's editable install


def test_this_checkout_is_found():
    repo = Path(__file__).resolve().parents[1]
    assert candidate_roots()[0] == repo and data_root() == repo
    assert models_dir() == repo / "models" and templates_dir() == repo / "templates"
