"""Wrap the report PDF in a DICOM Encapsulated PDF Storage instance (SOP Class 1.2.840.10008.5.1.4.1.1.104.1).

Written with pydicom, offline. For a DICOM slide the report joins the slide's study (same
StudyInstanceUID, patient and study attributes copied from the slide's metadata) as a new series; for
other formats (SVS) a new study is made. The PDF is stored in EncapsulatedDocument; DICOM pads odd-length
values with one NUL byte, so EncapsulatedDocumentLength records the true length and
:func:`read_encapsulated_pdf` uses it to give back the exact bytes. Patient and study text is checked
against its value representation (:func:`vr_problem`: characters and lengths) and refused, never written
invalid.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from sequoia_clinic import __version__
from sequoia_clinic.errors import ReportError
from sequoia_clinic.fileio import atomic_path
from sequoia_clinic.report.model import PatientInfo

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
DEIDENTIFICATION_METHOD = "sequoia-clinic HMAC-SHA256 pseudonyms; birth date removed"  # LO: <= 64 chars
_SH_MAX = 16  # DICOM SH (short string) limit, used by AccessionNumber and StudyID
_LO_MAX = 64
_PN_GROUP_MAX = 64  # PN: characters per component group (alphabetic=ideographic=phonetic)


class TextVR(Enum):
    """The DICOM value representations of the free-text fields a report carries (PS3.5 §6.2)."""

    PN = "PN"  # person name: up to 3 groups of up to 5 '^'-separated components, 64 characters a group
    LO = "LO"  # long string: 64 characters
    SH = "SH"  # short string: 16 characters


def vr_problem(value: str, vr: TextVR) -> str | None:
    """What makes ``value`` invalid as a ``vr`` value (UTF-8 character set), or None; never repeats it.

    Control characters (C0, DEL, C1: also CR, LF, TAB, ESC) and the value separator ``\\`` are not allowed
    in PN, LO or SH; lengths are counted in characters.
    """
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in value):
        return "contains control characters (line breaks, tabs, escapes), which DICOM does not allow"
    if "\\" in value:
        return "contains a backslash, which DICOM reserves as a value separator"
    if vr is TextVR.PN:
        groups = value.split("=")
        if len(groups) > 3 or any(group.count("^") > 4 for group in groups):
            return "has more name components than a DICOM person name allows"
        if any(len(group) > _PN_GROUP_MAX for group in groups):
            return f"is longer than a DICOM person name allows ({_PN_GROUP_MAX} characters)"
        return None
    limit = _LO_MAX if vr is TextVR.LO else _SH_MAX
    if len(value) > limit:
        return f"is longer than DICOM allows ({limit} characters)"
    return None


@dataclass(frozen=True)
class StudyInfo:
    """Study-level attributes of the source slide that the report instance repeats."""

    study_instance_uid: str | None = None
    study_date: str | None = None  # DICOM DA, YYYYMMDD
    study_time: str | None = None  # DICOM TM
    study_id: str | None = None
    accession_number: str | None = None
    referring_physician: str | None = None
    study_description: str | None = None
    source_sop_class_uid: str | None = None  # the slide instance the report was made from
    source_sop_instance_uid: str | None = None


def iso_date(value: str | None) -> str | None:
    """DICOM DA (YYYYMMDD...) -> ISO YYYY-MM-DD; anything else as it is."""
    if value and re.fullmatch(r"\d{8}", value[:8]):
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    return value


def person_name(value: str | None) -> str | None:
    """DICOM PN 'Family^Given^Middle' -> 'Family, Given Middle'."""
    if not value:
        return None
    family, _, rest = value.partition("^")
    given = " ".join(part for part in rest.split("^") if part)
    return f"{family}, {given}" if given else family


def _dicom_date(value: str | None, field: str) -> str:
    """ISO YYYY-MM-DD or YYYYMMDD -> DICOM DA; a year alone (de-identified) or nothing -> empty."""
    if not value:
        return ""
    digits = value.replace("-", "")
    if re.fullmatch(r"\d{4}", digits):
        return ""  # a year alone is not a DICOM date; leave the type-2 attribute empty
    if not re.fullmatch(r"\d{8}", digits):
        raise ReportError(f"the {field} is not a date of the form YYYY-MM-DD", fix="Pass it as YYYY-MM-DD.")
    return digits


def _dicom_sex(value: str | None) -> str:
    mapping = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}
    return mapping.get((value or "").strip().lower(), "")


def _dicom_person_name(value: str | None) -> str:
    """'Family, Given' -> 'Family^Given'; any other text becomes the family-name component."""
    if not value:
        return ""
    family, comma, given = value.partition(",")
    return f"{family.strip()}^{given.strip()}" if comma else value.strip()


def _limited(value: str | None, limit: int, field: str) -> str:
    text = value or ""
    problem = vr_problem(text, TextVR.SH if limit == _SH_MAX else TextVR.LO)
    if problem is not None:
        raise ReportError(f"the {field} {problem}", fix="Correct it, or leave DICOM out of --format.")
    return text


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ENCAPSULATED_PDF_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _add_patient(ds: Dataset, patient: PatientInfo) -> None:
    ds.PatientName = _dicom_person_name(patient.name)
    problem = vr_problem(str(ds.PatientName), TextVR.PN)
    if problem is not None:
        raise ReportError(f"the patient name {problem}", fix="Correct it, or leave DICOM out of --format.")
    ds.PatientID = _limited(patient.patient_id, _LO_MAX, "patient ID")
    ds.PatientBirthDate = _dicom_date(patient.birth_date, "birth date")
    ds.PatientSex = _dicom_sex(patient.sex)
    if patient.pseudonymised:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = DEIDENTIFICATION_METHOD


def _add_study(ds: Dataset, patient: PatientInfo, study: StudyInfo, now: dt.datetime) -> None:
    new_study = study.study_instance_uid is None
    ds.StudyInstanceUID = study.study_instance_uid or generate_uid()
    ds.StudyDate = study.study_date or (now.strftime("%Y%m%d") if new_study else "")
    ds.StudyTime = study.study_time or (now.strftime("%H%M%S") if new_study else "")
    ds.StudyID = _limited(study.study_id, _SH_MAX, "study ID")
    ds.AccessionNumber = _limited(patient.accession or study.accession_number, _SH_MAX, "accession number")
    ds.ReferringPhysicianName = study.referring_physician or ""
    if study.study_description:
        ds.StudyDescription = study.study_description[:_LO_MAX]


def _add_document(
    ds: Dataset, pdf_bytes: bytes, title: str, patient: PatientInfo, study: StudyInfo, now: dt.datetime
) -> None:
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 900  # a high number keeps the report series after the slide's own series
    ds.SeriesDescription = "sequoia-clinic report"
    ds.Manufacturer = "sequoia-clinic"
    ds.SoftwareVersions = __version__
    ds.ConversionType = "SYN"  # synthetic: generated by software, not scanned
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO" if patient.pseudonymised else "YES"  # the PDF prints the patient block
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = Sequence()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf_bytes
    ds.EncapsulatedDocumentLength = len(pdf_bytes)
    if study.source_sop_instance_uid and study.source_sop_class_uid and not patient.pseudonymised:
        source = Dataset()
        source.ReferencedSOPClassUID = study.source_sop_class_uid
        source.ReferencedSOPInstanceUID = study.source_sop_instance_uid
        ds.SourceInstanceSequence = Sequence([source])


def build_encapsulated_pdf(
    pdf_bytes: bytes,
    patient: PatientInfo,
    study: StudyInfo | None = None,
    title: str = "Image-based molecular risk report (research use only)",
    now: dt.datetime | None = None,
) -> Dataset:
    """The Encapsulated PDF dataset (with file meta), ready to write."""
    if not pdf_bytes.startswith(b"%PDF-"):
        raise ReportError("the report bytes are not a PDF", fix="Pass the bytes of report.pdf.")
    now = now or dt.datetime.now(dt.UTC)
    study = study or StudyInfo()
    sop_instance_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_instance_uid)
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, so names in any script survive
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    _add_patient(ds, patient)
    _add_study(ds, patient, study, now)
    _add_document(ds, pdf_bytes, title, patient, study, now)
    return ds


def write_encapsulated_pdf(
    pdf_bytes: bytes,
    out: Path,
    patient: PatientInfo,
    study: StudyInfo | None = None,
    title: str = "Image-based molecular risk report (research use only)",
    now: dt.datetime | None = None,
) -> None:
    """Write ``pdf_bytes`` as a DICOM Encapsulated PDF file at ``out`` (atomically).

    ``study`` None (e.g. SVS input) starts a new study; pass the slide's study (``pipeline.patient.study_from_metadata``) to file
    the report into the slide's study. ``patient`` is the (possibly pseudonymised) header block.
    """
    ds = build_encapsulated_pdf(pdf_bytes, patient, study, title, now)
    with atomic_path(Path(out)) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)


def read_encapsulated_pdf(path: Path) -> bytes:
    """The exact PDF bytes stored in an Encapsulated PDF file (padding removed)."""
    ds = pydicom.dcmread(path)
    if ds.SOPClassUID != ENCAPSULATED_PDF_STORAGE:
        raise ReportError("not a DICOM Encapsulated PDF instance", path=path)
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    return data[: int(length)] if length is not None else data
