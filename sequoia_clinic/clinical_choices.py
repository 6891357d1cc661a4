"""The fixed clinical choices of ``score`` and risk-model populations (receptor status, grade, specimen type).

Plain enums with no dependencies, so the CLI can offer them as choices without importing the survival stage.
"""

from __future__ import annotations

from enum import StrEnum


class ReceptorStatus(StrEnum):
    """ER or HER2 status."""

    POSITIVE = "positive"
    NEGATIVE = "negative"


class Grade(StrEnum):
    """Histological grade (Nottingham / Elston-Ellis)."""

    G1 = "1"
    G2 = "2"
    G3 = "3"


class Menopause(StrEnum):
    PRE = "pre"
    POST = "post"


class SpecimenType(StrEnum):
    """What the scanned tissue is; a risk model lists the types it was developed on."""

    RESECTION = "resection"  # formalin-fixed, paraffin-embedded surgical resection
    BIOPSY = "biopsy"  # core-needle biopsy (FFPE)
    FROZEN = "frozen"  # frozen section


class MissingRule(StrEnum):
    """What calibration does with a missing clinical value (``calibrate --missing``)."""

    REFUSE = "refuse"  # an error naming the column and the count
    IMPUTE = "impute"  # median (continuous, ordinal) or mode (categorical) of the calibration cohort
