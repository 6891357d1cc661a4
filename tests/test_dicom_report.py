"""The DICOM Encapsulated PDF report: read back by pydicom, same study as the slide, exact PDF bytes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
import pytest

from sequoia_clinic.errors import ReportError
from sequoia_clinic.pipeline.patient import patient_from_metadata, study_from_metadata
from sequoia_clinic.report.dicom import (
    ENCAPSULATED_PDF_STORAGE,
    read_encapsulated_pdf,
    write_encapsulated_pdf,
)
from sequoia_clinic.report.dicom_text import StudyInfo
from sequoia_clinic.report.model import PatientInfo
from sequoia_clinic.slides.base import SlideMetadata
from sequoia_clinic.slides.opening import open_slide

PATIENT = PatientInfo(
    name="Doe, Jane", patient_id="PAT-0012345", birth_date="1961-04-23", sex="F", accession="S24-004711"
)
NOW = dt.datetime(2024, 3, 5, 10, 15, tzinfo=dt.UTC)
# A tiny but well-formed PDF of odd length (DICOM pads odd values to even length).
TINY_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


@pytest.fixture(scope="module")
def slide_header(cmu_dicom: Path) -> pydicom.Dataset:
    """The level-0 VOLUME instance's header, read independently of the slide reader."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(cmu_dicom.glob("*.dcm"))]
    volumes = [ds for ds in headers if "VOLUME" in [str(v).upper() for v in ds.ImageType]]
    return max(volumes, key=lambda ds: int(ds.TotalPixelMatrixColumns))


@pytest.fixture(scope="module")
def slide_metadata(cmu_dicom: Path) -> SlideMetadata:
    with open_slide(cmu_dicom) as slide:
        return slide.info.metadata


@pytest.mark.parametrize("pdf", [TINY_PDF, TINY_PDF + b"\n"], ids=["odd", "even"])
def test_pdf_round_trips_with_slide_study(
    tmp_path: Path, slide_header: pydicom.Dataset, slide_metadata: SlideMetadata, pdf: bytes
) -> None:
    out = tmp_path / "report.dcm"
    write_encapsulated_pdf(pdf, out, PATIENT, study_from_metadata(slide_metadata), now=NOW)
    ds = pydicom.dcmread(out)
    assert ds.file_meta.MediaStorageSOPClassUID == ENCAPSULATED_PDF_STORAGE
    assert ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE
    assert ds.StudyInstanceUID == slide_header.StudyInstanceUID
    assert ds.SeriesInstanceUID != slide_header.SeriesInstanceUID
    assert ds.SOPInstanceUID not in (slide_header.SOPInstanceUID, ds.SeriesInstanceUID)
    assert ds.Modality == "DOC" and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.EncapsulatedDocumentLength == len(pdf)
    assert len(ds.EncapsulatedDocument) % 2 == 0
    assert bytes(ds.EncapsulatedDocument)[: len(pdf)] == pdf
    assert read_encapsulated_pdf(out) == pdf
    assert str(ds.PatientName) == "Doe^Jane" and ds.PatientID == "PAT-0012345"
    assert ds.PatientBirthDate == "19610423" and ds.PatientSex == "F" and ds.AccessionNumber == "S24-004711"
    assert ds.SourceInstanceSequence[0].ReferencedSOPInstanceUID == slide_header.SOPInstanceUID
    raw = out.read_bytes()  # independent check: a DICOM Part 10 file with the PDF bytes stored verbatim
    assert raw[128:132] == b"DICM" and pdf in raw


def test_svs_input_gets_a_new_study(tmp_path: Path) -> None:
    out_a, out_b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_encapsulated_pdf(TINY_PDF, out_a, PATIENT, None, now=NOW)
    write_encapsulated_pdf(TINY_PDF, out_b, PATIENT, StudyInfo(), now=NOW)
    a, b = pydicom.dcmread(out_a), pydicom.dcmread(out_b)
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.StudyDate == "20240305" and "SourceInstanceSequence" not in a
    assert pydicom.uid.UID(a.StudyInstanceUID).is_valid


def test_bad_inputs_raise_and_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a PDF"):
        write_encapsulated_pdf(b"hello", tmp_path / "x.dcm", PATIENT)
    with pytest.raises(ReportError, match="birth date"):
        write_encapsulated_pdf(TINY_PDF, tmp_path / "y.dcm", PatientInfo(birth_date="23/04/1961"))
    with pytest.raises(ReportError, match="accession number"):
        write_encapsulated_pdf(TINY_PDF, tmp_path / "z.dcm", PatientInfo(accession="A" * 17))
    assert list(tmp_path.iterdir()) == []


def test_patient_from_dicom_slide(slide_metadata: SlideMetadata) -> None:
    patient = patient_from_metadata(slide_metadata, is_dicom=True)
    # the CMU DICOM has empty patient attributes and an acquisition date of 2009-12-29
    assert patient.name is None and patient.patient_id is None and patient.birth_date is None
    assert patient.scan_date == "2009-12-29"
    meta = SlideMetadata(patient_name="Doe^Jane", patient_id="P1", patient_birth_date="19610423")
    assert patient_from_metadata(meta, is_dicom=True) == PatientInfo(
        name="Doe, Jane", patient_id="P1", birth_date="1961-04-23"
    )
