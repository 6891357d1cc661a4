"""The patient and study a report is about: the slide's own attributes, then the user's options on top.

The slide readers parse the file once and put what a report needs into :class:`SlideMetadata` (DICOM
patient/study attributes and the SOP class/instance UIDs of the level-0 image; an Aperio scan date as an
ISO day). This module only turns that record into the report's :class:`PatientInfo` and, for DICOM slides,
the :class:`StudyInfo` the DICOM report joins. Options are validated here before any work, and error
messages never repeat the values (they may be identifiers).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

from sequoia_clinic.errors import OptionError
from sequoia_clinic.report.dicom_text import StudyInfo, TextVR, iso_date, person_name, vr_problem
from sequoia_clinic.report.model import PatientInfo
from sequoia_clinic.slides.base import SlideMetadata

DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
SEX_VALUES = ("F", "M", "O")


@dataclass(frozen=True)
class PatientOptions:
    """Patient and specimen fields given by the user; they override the slide's own."""

    name: str | None = None
    patient_id: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    accession: str | None = None
    specimen: str | None = None


MAX_OPTION_CHARS = 256  # any patient option longer than this is refused before it is looked at further
_TEXT_VRS = (
    ("name", TextVR.PN),
    ("patient_id", TextVR.LO),
    ("accession", TextVR.SH),
    ("specimen", TextVR.LO),
)


def check_patient_options(options: PatientOptions) -> None:
    """Validate the user's patient fields before any work (messages never repeat the values).

    Whatever the output formats, text fields follow the DICOM rules of the element they end up in (the
    name as PN, patient ID and specimen as LO, accession as SH: characters and lengths).
    """
    for field, vr in _TEXT_VRS:
        value = getattr(options, field)
        if value is None:
            continue
        if len(value) > MAX_OPTION_CHARS:
            raise OptionError(f"longer than {MAX_OPTION_CHARS} characters", fix="Shorten it.", option=field)
        text = _dicom_name(value) if vr is TextVR.PN else value
        problem = vr_problem(text, vr)
        if problem is not None:
            raise OptionError(problem, fix="Correct it (DICOM value rules).", option=field)
    if options.birth_date is not None and not _is_iso_date(options.birth_date):
        raise OptionError("not a valid date", fix="Pass it as YYYY-MM-DD.", option="birth_date")
    if options.sex is not None and options.sex.strip().upper() not in SEX_VALUES:
        raise OptionError("not one of F, M, O", fix="Pass F, M or O.", option="sex")


def _dicom_name(value: str) -> str:
    """'Family, Given' as the PN value the DICOM report writes ('Family^Given')."""
    family, comma, given = value.partition(",")
    return f"{family.strip()}^{given.strip()}" if comma else value.strip()


def _is_iso_date(text: str) -> bool:
    if not DATE_PATTERN.fullmatch(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def patient_from_metadata(meta: SlideMetadata, is_dicom: bool) -> PatientInfo:
    """The report's patient block from the slide's attributes (DICOM: patient module; others: scan only)."""
    if not is_dicom:
        return PatientInfo(scan_date=meta.scan_day, scanner=meta.scanner)
    return PatientInfo(
        name=person_name(meta.patient_name),
        patient_id=meta.patient_id,
        birth_date=iso_date(meta.patient_birth_date),
        sex=meta.patient_sex,
        accession=meta.accession_number,
        specimen=meta.specimen_label,
        scan_date=meta.scan_day,
        scanner=meta.scanner,
    )


def study_from_metadata(meta: SlideMetadata) -> StudyInfo:
    """The study attributes a DICOM report repeats, and the level-0 instance it references."""
    return StudyInfo(
        study_instance_uid=meta.study_instance_uid,
        study_date=meta.study_date,
        study_time=meta.study_time,
        study_id=meta.study_id,
        accession_number=meta.accession_number,
        referring_physician=meta.referring_physician_name,
        study_description=meta.study_description,
        source_sop_class_uid=meta.sop_class_uid,
        source_sop_instance_uid=meta.sop_instance_uid,
    )


def patient_and_study(
    meta: SlideMetadata, is_dicom: bool, options: PatientOptions
) -> tuple[PatientInfo, StudyInfo | None]:
    """Slide attributes first, then the user's options on top (an accession also goes into the study)."""
    patient = patient_from_metadata(meta, is_dicom)
    study = study_from_metadata(meta) if is_dicom else None
    patient = replace(
        patient,
        name=_first(options.name, patient.name),
        patient_id=_first(options.patient_id, patient.patient_id),
        birth_date=_first(options.birth_date, patient.birth_date),
        sex=_first(options.sex, patient.sex),
        accession=_first(options.accession, patient.accession),
        specimen=_first(options.specimen, patient.specimen),
    )
    if study is not None and options.accession is not None:
        study = replace(study, accession_number=options.accession)
    return patient, study


def _first(option: str | None, own: str | None) -> str | None:
    """The user's value when given, else the slide's own."""
    return option if option is not None else own
