"""The fixed choices of a cohort run (``--executor``, ``--reports``), importable without the pipeline."""

from __future__ import annotations

from enum import StrEnum


class ExecutorKind(StrEnum):
    """``--executor``: ``local`` (this machine) or ``dask`` (an existing scheduler)."""

    LOCAL = "local"
    DASK = "dask"


class ReportsMode(StrEnum):
    """Per-slide report files: ``none`` = result.json only, ``pdf`` = + report.pdf, ``all`` = + report.dcm."""

    NONE = "none"
    PDF = "pdf"
    ALL = "all"

    @property
    def formats(self) -> tuple[str, ...]:
        return {"none": ("json",), "pdf": ("pdf", "json"), "all": ("pdf", "json", "dicom")}[self.value]
