"""Tell a DICOM Part 10 file by its first bytes, without importing pydicom or wsidicom."""

from __future__ import annotations

from pathlib import Path


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part 10 file (128-byte preamble followed by 'DICM')."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False
