"""Shared fixtures: paths to the real test data in ../shared/data (tests may read it; the product may not)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SLIDES = SHARED_DATA / "slides"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data not found: {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def cmu_svs() -> Path:
    return _need(SLIDES / "CMU-1-Small-Region.svs")


@pytest.fixture(scope="session")
def cmu_dicom() -> Path:
    return _need(SLIDES / "CMU-1-Small-Region.dicom")


@pytest.fixture(scope="session")
def tcga_svs() -> Path:
    return _need(SLIDES / "TCGA-CR-7395-01A-01-TS1.svs")


@pytest.fixture(scope="session")
def malformed_dicom() -> Path:
    return _need(SLIDES / "malformed" / "small_dicom_no_spacing.dcm")


@pytest.fixture(scope="session")
def gene_list_csv() -> Path:
    return _need(SHARED_DATA / "sequoia" / "gene_list.csv")


@pytest.fixture(scope="session")
def signatures_dir() -> Path:
    return _need(SHARED_DATA / "signatures")
