"""Pseudonymisation for ``--deidentify``: replace identifying fields in every output before rendering.

Design (documented for users in the README by the lead):

* A pseudonym is ``PREFIX-`` + the first 10 base32 characters of HMAC-SHA256(key, identifier). With a
  secret key set by the site (``ReportSettings.pseudonym_key``) the same patient always gets the same
  pseudonym, so re-runs can be linked, yet nobody without the key can recompute or reverse it (a plain
  hash of a short patient ID could be reversed by trying all IDs).
* Without a configured key a random key is drawn for the run (:func:`pseudonym_key`) and thrown away:
  pseudonyms are then unlinkable, also across runs of the same slide.
* Name and patient ID become one patient pseudonym (``ANON-``), the accession number gets its own
  (``ACC-``); the birth date is removed; the scan date keeps only its year; the slide path becomes a
  neutral name; any original identifier found inside free text (specimen, scanner, warnings) is blanked.
* The DICOM report gets a new study UID derived from the key and the original one, no source-instance
  reference, PatientIdentityRemoved = YES.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
from pathlib import PurePath

from sequoia_clinic.report.dicom_text import StudyInfo
from sequoia_clinic.report.model import PatientInfo, ReportData

REMOVED = "[removed]"


def pseudonym_key(configured: str | None) -> bytes:
    """The HMAC key: the configured secret, or a fresh random key (unlinkable pseudonyms) when None."""
    if configured:
        return configured.encode("utf-8")
    return secrets.token_bytes(32)


def pseudonymise(identifier: str, key: bytes, prefix: str = "ANON") -> str:
    """Deterministic pseudonym of ``identifier`` under ``key``, e.g. ``ANON-K3Q7M2XZ4B``."""
    digest = hmac.new(key, f"{prefix}:{identifier.strip()}".encode(), hashlib.sha256).digest()
    return f"{prefix}-{base64.b32encode(digest).decode('ascii')[:10]}"


def _identifiers(patient: PatientInfo) -> list[str]:
    """Original identifying strings (and name parts) to blank out of free text, longest first."""
    values = [patient.name, patient.patient_id, patient.accession, patient.birth_date]
    if patient.birth_date:
        values.append(patient.birth_date.replace("-", ""))
    if patient.name:
        values += [part for part in re.split(r"[\s,^]+", patient.name) if len(part) >= 3]
    return sorted({v for v in values if v}, key=len, reverse=True)


def scrub(text: str | None, identifiers: list[str]) -> str | None:
    """``text`` with every occurrence of an identifier (case-insensitive) replaced by ``[removed]``."""
    if not text:
        return text
    for value in identifiers:
        text = re.sub(re.escape(value), REMOVED, text, flags=re.IGNORECASE)
    return text


def deidentify_patient(patient: PatientInfo, key: bytes) -> PatientInfo:
    source = patient.patient_id or patient.name
    pseudonym = pseudonymise(source, key, "ANON") if source else None
    identifiers = _identifiers(patient)
    return PatientInfo(
        name=pseudonym,
        patient_id=pseudonym,
        birth_date=None,
        sex=patient.sex,
        accession=pseudonymise(patient.accession, key, "ACC") if patient.accession else None,
        specimen=scrub(patient.specimen, identifiers),
        scan_date=patient.scan_date[:4] if patient.scan_date else None,
        scanner=scrub(patient.scanner, identifiers),
        pseudonymised=True,
    )


def _neutral_slide_path(path: str, sha256: str) -> str:
    suffix = PurePath(path).suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,6}", PurePath(path).suffix) else ""
    return f"slide-{sha256[:12]}{suffix}"


def deidentify_report(data: ReportData, key: bytes) -> ReportData:
    """A copy of ``data`` with the patient block pseudonymised and identifiers removed from free text."""
    identifiers = _identifiers(data.patient)
    qc = dataclasses.replace(
        data.qc,
        warnings=tuple(
            dataclasses.replace(w, message=scrub(w.message, identifiers) or "") for w in data.qc.warnings
        ),
    )
    slide = dataclasses.replace(data.slide, path=_neutral_slide_path(data.slide.path, data.slide.sha256))
    return dataclasses.replace(data, patient=deidentify_patient(data.patient, key), qc=qc, slide=slide)


def deidentify_study(study: StudyInfo | None, key: bytes) -> StudyInfo:
    """Study attributes for a de-identified DICOM report: a derived study UID and nothing else."""
    if study is None or study.study_instance_uid is None:
        return StudyInfo()
    from pydicom.uid import generate_uid  # pydicom: only when pseudonymising a DICOM study

    uid = generate_uid(entropy_srcs=[key.hex(), study.study_instance_uid])
    return StudyInfo(study_instance_uid=uid)
