"""Write one report's files (PDF, result.json, DICOM Encapsulated PDF) into a folder, all or nothing.

The files are written into a temporary folder beside ``out_dir`` and moved into place only when every one
succeeded (``fileio.atomic_dir``), so a failed run never leaves a partial report behind.
"""

from __future__ import annotations

import dataclasses
import time
from enum import StrEnum
from pathlib import Path

from sequoia_clinic.fileio import atomic_dir, write_json_atomic
from sequoia_clinic.report.dicom_text import StudyInfo
from sequoia_clinic.report.model import ReportData
from sequoia_clinic.report.result import result_dict
from sequoia_clinic.report.templates import load_report_text
from sequoia_clinic.settings import ReportSettings


class OutputFormat(StrEnum):
    """A report file kind; the value is the name used on the command line."""

    PDF = "pdf"
    JSON = "json"
    DICOM = "dicom"


FILE_NAMES = {
    OutputFormat.PDF: "report.pdf",
    OutputFormat.JSON: "result.json",
    OutputFormat.DICOM: "report.dcm",
}


def write_report_files(
    out_dir: Path,
    data: ReportData,
    study: StudyInfo | None,
    formats: tuple[OutputFormat, ...],
    settings: ReportSettings,
    started: float | None = None,
) -> tuple[Path, ...]:
    """Render and write the requested files; returns their final paths in canonical order.

    ``started`` (a ``time.perf_counter()`` value at the start of the run) makes ``result.json`` record the
    PDF rendering time and the measured wall of the whole run as ``total``; the PDF itself shows the stages
    before its own rendering.
    """
    text = load_report_text(settings.templates_dir)
    pdf = b""
    stages = dict(data.timings)
    if OutputFormat.PDF in formats or OutputFormat.DICOM in formats:  # JSON alone needs no PDF
        from sequoia_clinic.report.pdf import render_report_pdf_bytes  # reportlab + matplotlib: only here

        t0 = time.perf_counter()
        pdf = render_report_pdf_bytes(data, settings, text)
        stages["render_pdf"] = round(time.perf_counter() - t0, 3)
    if started is not None:
        stages["total"] = round(time.perf_counter() - started, 3)
        data = dataclasses.replace(data, timings=stages)
    wanted = [f for f in OutputFormat if f in formats]
    with atomic_dir(out_dir) as tmp:
        for fmt in wanted:
            target = tmp / FILE_NAMES[fmt]
            if fmt is OutputFormat.PDF:
                target.write_bytes(pdf)
            elif fmt is OutputFormat.JSON:
                write_json_atomic(target, result_dict(data, text))
            else:
                from sequoia_clinic.report.dicom import write_encapsulated_pdf  # pydicom: only for DICOM

                write_encapsulated_pdf(pdf, target, data.patient, study)
    return tuple(out_dir / FILE_NAMES[f] for f in wanted)
