"""The patient PDF: text content, demo banner on every page, page count, determinism, atomic writing."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from example_report import EXAMPLE_PATIENT, example_report_data
from pypdf import PdfReader

from sequoia_clinic.errors import ReportError
from sequoia_clinic.report.model import AbsoluteRisk, PatientInfo, RiskResult
from sequoia_clinic.report.pdf import render_report_pdf, render_report_pdf_bytes
from sequoia_clinic.settings import ReportSettings

FAST = ReportSettings(figure_dpi=90)  # figures at low resolution: layout and text are unchanged
BANNER = "DEMONSTRATION — NOT FOR CLINICAL USE"


def _pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


@pytest.fixture(scope="module")
def demo_pdf() -> bytes:
    return render_report_pdf_bytes(example_report_data(seed=3), FAST)


def test_pdf_holds_patient_fields_and_result(demo_pdf: bytes) -> None:
    text = "\n".join(_pages(demo_pdf))
    patient = EXAMPLE_PATIENT
    for value in (
        patient.name,
        patient.patient_id,
        patient.birth_date,
        patient.accession,
        patient.scan_date,
        patient.scanner,
        "Left breast, core biopsy",
    ):
        assert value in text
    data = example_report_data(seed=3)
    assert data.risk.group.upper() in text  # the big risk-group label
    assert f"Risk score {data.risk.score:.0f} of 100" in text
    assert data.report_id in text
    # 5- and 10-year absolute risks with CI, formatted independently here
    assert "14%" in text and "95% CI 9%–20%" in text and "26%" in text and "95% CI 18%–35%" in text
    for row in data.signature.genes:
        assert row.gene in text
    assert "Intended use and limitations" in text and "not a medical device" in text


def test_demo_banner_on_every_page_and_page_count(demo_pdf: bytes) -> None:
    pages = _pages(demo_pdf)
    assert 2 <= len(pages) <= 4
    for number, text in enumerate(pages, start=1):
        assert BANNER in text, f"page {number} lacks the demo banner"
        assert f"Page {number} of {len(pages)}" in text
        assert EXAMPLE_PATIENT.patient_id in text  # running header identifies the patient on every page


def test_no_banner_without_demo_and_long_inputs_fit() -> None:
    base = example_report_data(seed=4, demo=False, n_genes=16)
    long_patient = dataclasses.replace(
        EXAMPLE_PATIENT,
        name="Oyelaran-Featherstonehaugh, Maria-Concepción Anneliese Bartholomew-Smythe",
        specimen="Right breast, wide local excision, invasive lobular carcinoma with extensive in situ component",
    )
    no_ci = RiskResult(
        linear_predictor=3.9,
        score=100.0,
        group_names=("Lower", "Higher"),
        group_index=1,
        absolute_risks=(AbsoluteRisk(10.0, 0.61),),
        linear_predictor_out_of_range=True,
    )
    cohort = dataclasses.replace(base.cohort, cutoffs=(50.0,), km_curves=base.cohort.km_curves[:2])
    data = dataclasses.replace(base, patient=long_patient, risk=no_ci, cohort=cohort, images=None)
    pages = _pages(render_report_pdf_bytes(data, FAST))
    assert 2 <= len(pages) <= 4
    assert all(BANNER not in text for text in pages)
    joined = "\n".join(pages)
    assert "HIGHER" in joined and "61%" in joined
    assert "outside the range seen in the calibration cohort" in joined  # derived QC warning


def test_report_without_absolute_risk() -> None:
    base = example_report_data(seed=7)
    data = dataclasses.replace(base, risk=dataclasses.replace(base.risk, absolute_risks=()), images=None)
    text = "\n".join(_pages(render_report_pdf_bytes(data, FAST)))
    assert "Absolute risk not estimable" in text and "follow-up is too short" in text


def test_rendering_is_deterministic(demo_pdf: bytes) -> None:
    assert render_report_pdf_bytes(example_report_data(seed=3), FAST) == demo_pdf


def test_render_writes_atomically(tmp_path: Path) -> None:
    out = tmp_path / "report.pdf"
    render_report_pdf(example_report_data(seed=5), out, FAST)
    assert out.read_bytes().startswith(b"%PDF-")
    missing = dataclasses.replace(FAST, templates_dir=tmp_path / "nowhere")
    with pytest.raises(ReportError, match="report template not found"):
        render_report_pdf(example_report_data(seed=5), tmp_path / "other.pdf", missing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.pdf"]


def test_unicode_names_survive(tmp_path: Path) -> None:
    patient = PatientInfo(name="Müller-Łukasiewicz, Zoë Ångström", patient_id="ÅÄÖ-42")
    data = dataclasses.replace(example_report_data(seed=6), patient=patient)
    text = "\n".join(_pages(render_report_pdf_bytes(data, FAST)))
    assert "Müller-Łukasiewicz, Zoë Ångström" in text and "ÅÄÖ-42" in text
