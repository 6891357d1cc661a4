"""The report stage: patient PDF, result.json and DICOM Encapsulated PDF from one :class:`ReportData`.

``render_report_pdf`` writes the PDF, ``result_dict`` builds the result.json document (validated by
``schema.validate_result``), ``dicom.write_encapsulated_pdf`` wraps the PDF for PACS, and
``deidentify.deidentify_report`` replaces identifying fields with pseudonyms before any of them.
"""

from sequoia_clinic.report.model import (
    AbsoluteRisk,
    CalibrationCohort,
    ClinicalSummary,
    GeneRow,
    KMCurve,
    Metric,
    PatientInfo,
    Provenance,
    QualityControl,
    RepeatabilityResult,
    ReportData,
    RiskResult,
    SignatureResult,
    SlideImages,
    SlideInfo,
    TileHeatmap,
    make_report_id,
)
from sequoia_clinic.report.pdf import render_report_pdf, render_report_pdf_bytes
from sequoia_clinic.report.result import VOLATILE_KEYS, result_dict, without_volatile
from sequoia_clinic.report.schema import RESULT_SCHEMA_PATH, validate_result

__all__ = [
    "RESULT_SCHEMA_PATH",
    "VOLATILE_KEYS",
    "AbsoluteRisk",
    "CalibrationCohort",
    "GeneRow",
    "KMCurve",
    "Metric",
    "PatientInfo",
    "Provenance",
    "ClinicalSummary",
    "RepeatabilityResult",
    "QualityControl",
    "ReportData",
    "RiskResult",
    "SignatureResult",
    "SlideImages",
    "SlideInfo",
    "TileHeatmap",
    "make_report_id",
    "render_report_pdf",
    "render_report_pdf_bytes",
    "result_dict",
    "validate_result",
    "without_volatile",
]
