"""--deidentify: no original identifier in the PDF text, result.json or the DICOM report; pseudonyms are
keyed HMACs (stable with a configured key, unlinkable without one)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import io
import json
from pathlib import Path

import pydicom
import pytest
from example_report import EXAMPLE_PATIENT, example_report_data
from pypdf import PdfReader

from sequoia_clinic.report.deidentify import (
    deidentify_report,
    deidentify_study,
    pseudonym_key,
    pseudonymise,
)
from sequoia_clinic.report.dicom import read_encapsulated_pdf, write_encapsulated_pdf
from sequoia_clinic.report.dicom_text import StudyInfo
from sequoia_clinic.report.pdf import render_report_pdf_bytes
from sequoia_clinic.report.result import result_dict
from sequoia_clinic.settings import ReportSettings

KEY = b"site-secret"
SOURCE_STUDY = StudyInfo(
    study_instance_uid="1.2.826.0.1.3680043.8.498.1234567",
    study_date="20240302",
    accession_number="S24-004711",
    source_sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.6",
    source_sop_instance_uid="1.2.826.0.1.3680043.8.498.7654321",
)
IDENTIFIERS = (
    "Doe",
    "Jane",
    "PAT-0012345",
    "0012345",
    "1961-04-23",
    "19610423",
    "S24-004711",
    "004711",
    "2024-03-02",
    "1.2.826.0.1.3680043.8.498.1234567",
    "1.2.826.0.1.3680043.8.498.7654321",
)


def test_pseudonym_is_keyed_hmac() -> None:
    digest = hmac.new(KEY, b"ANON:PAT-0012345", hashlib.sha256).digest()
    assert pseudonymise("PAT-0012345", KEY) == "ANON-" + base64.b32encode(digest).decode()[:10]
    assert pseudonymise("PAT-0012345", KEY) == pseudonymise(" PAT-0012345 ", KEY)
    assert pseudonymise("PAT-0012345", b"other") != pseudonymise("PAT-0012345", KEY)
    assert pseudonym_key("abc") == b"abc"
    assert pseudonym_key(None) != pseudonym_key(None)  # no key configured: a fresh random key per run


def _assert_clean(text: str, where: str) -> None:
    for value in IDENTIFIERS:
        assert value.lower() not in text.lower(), f"{value!r} found in {where}"


@pytest.fixture(scope="module")
def deidentified():
    data = example_report_data(seed=2)
    slide = dataclasses.replace(data.slide, path="/scans/Doe_Jane_PAT-0012345.svs")
    return deidentify_report(dataclasses.replace(data, slide=slide), KEY)


def test_no_identifier_in_pdf_json_or_dicom(deidentified, tmp_path: Path) -> None:
    pdf = render_report_pdf_bytes(deidentified, ReportSettings(figure_dpi=72))
    reader = PdfReader(io.BytesIO(pdf))
    _assert_clean("\n".join(page.extract_text() for page in reader.pages), "PDF text")
    _assert_clean(json.dumps(reader.metadata or {}, default=str), "PDF metadata")
    doc = result_dict(deidentified)
    _assert_clean(json.dumps(doc), "result.json")
    assert doc["patient"]["pseudonymised"] is True and doc["patient"]["birth_date"] is None
    assert doc["patient"]["patient_id"] == pseudonymise(EXAMPLE_PATIENT.patient_id, KEY)
    assert doc["patient"]["scan_date"] == "2024"
    assert doc["slide"]["path"] == f"slide-{deidentified.slide.sha256[:12]}.svs"
    out = tmp_path / "report.dcm"
    write_encapsulated_pdf(pdf, out, deidentified.patient, deidentify_study(SOURCE_STUDY, KEY))
    ds = pydicom.dcmread(out)
    _assert_clean(
        repr(ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda _: "")),
        "DICOM attributes",
    )
    raw = out.read_bytes()
    for value in IDENTIFIERS:
        assert value.encode() not in raw
    assert ds.PatientIdentityRemoved == "YES" and ds.BurnedInAnnotation == "NO"
    assert read_encapsulated_pdf(out) == pdf


def test_study_uid_is_derived_and_stable() -> None:
    first, second = deidentify_study(SOURCE_STUDY, KEY), deidentify_study(SOURCE_STUDY, KEY)
    assert first.study_instance_uid == second.study_instance_uid != SOURCE_STUDY.study_instance_uid
    assert first.accession_number is None and first.source_sop_instance_uid is None
    assert deidentify_study(None, KEY) == StudyInfo()
