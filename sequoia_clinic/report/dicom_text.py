"""DICOM text rules for patient and study fields (value representations PN, LO, SH) and the study record.

Checked for every output format (a PDF-only report holds the same text a DICOM one would), so this module
is apart from the pydicom writer in ``dicom.py``, which only a DICOM output imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

SH_MAX = 16  # DICOM SH (short string) limit, used by AccessionNumber and StudyID
LO_MAX = 64
PN_GROUP_MAX = 64  # PN: characters per component group (alphabetic=ideographic=phonetic)


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
        if any(len(group) > PN_GROUP_MAX for group in groups):
            return f"is longer than a DICOM person name allows ({PN_GROUP_MAX} characters)"
        return None
    limit = LO_MAX if vr is TextVR.LO else SH_MAX
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
