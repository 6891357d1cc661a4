"""``open_slide``: validate a user path, recognise its format from its bytes, and open the right backend.

The format is decided from the file's magic bytes, never from its extension (a text file renamed ``.svs``
is refused as such), and a slide above the resource budget of ``slides/base.py`` is refused before any
pixel is decoded. Also ``slide_sha256``: a stable content hash of the file(s) that make up a slide.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sequoia_clinic.errors import InputPathError, SlideFormatError
from sequoia_clinic.fileio import sha256_file
from sequoia_clinic.slides.base import Slide, check_budget
from sequoia_clinic.slides.mpp import validate_user_mpp
from sequoia_clinic.slides.sniff import is_dicom_file
from sequoia_clinic.slides.tiff_backend import open_tiff

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_SUPPORTED = "Pass an Aperio .svs, a pyramidal .tif or a DICOM WSI folder (or one of its .dcm files)."


def _kind(path: Path) -> str:
    """'dicom-folder', 'dicom', or 'tiff'; raises for anything else."""
    if not path.exists():
        raise InputPathError("does not exist", path, "Check the slide path.")
    if path.is_dir():
        return "dicom-folder"
    if not path.is_file():
        raise InputPathError("is not a regular file or folder", path, _SUPPORTED)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise InputPathError(
            f"cannot be read ({exc.strerror})", path, "Check the file's permissions."
        ) from exc
    if is_dicom_file(path):  # first: a DICOM preamble may itself hold a TIFF header (dual-personality files)
        return "dicom"
    if head in _TIFF_MAGIC:
        return "tiff"
    what = "is empty" if path.stat().st_size == 0 else "is neither a TIFF/SVS nor a DICOM file"
    raise SlideFormatError(what, path, _SUPPORTED)


def open_slide(path: Path | str, mpp: float | None = None) -> Slide:
    """Open a whole-slide image (SVS/TIFF file, DICOM WSI folder or one ``.dcm`` of a series).

    ``mpp`` overrides the pixel size (um/px at full resolution) recorded in the file. Raises
    :class:`~sequoia_clinic.errors.SequoiaError` subclasses with one-line, PHI-free messages.
    """
    path = Path(path).expanduser()
    user_mpp = validate_user_mpp(mpp)
    kind = _kind(path)
    slide: Slide
    if kind == "tiff":
        slide = open_tiff(path, user_mpp)
    else:
        from sequoia_clinic.slides.dicom_backend import open_dicom  # wsidicom + pydicom: DICOM slides only

        slide = open_dicom(path, user_mpp)
    try:  # before any pixel is decoded (the TIFF backend also checks the stored segments and compression)
        check_budget(
            path,
            slide.info.level_dimensions,
            [slide.native_tile_size(level) for level in range(slide.info.level_count)],
        )
    except BaseException:
        slide.close()
        raise
    return slide


def slide_files(path: Path | str) -> list[Path]:
    """The files that make up the slide at ``path`` (the file itself, or the DICOM series' instances)."""
    path = Path(path).expanduser()
    if _kind(path) == "tiff":
        return [path]
    from sequoia_clinic.slides.dicom_backend import series_files

    return series_files(path)


def slide_sha256(path: Path | str) -> str:
    """Content hash of the slide at ``path`` (see :func:`files_sha256`)."""
    path = Path(path).expanduser()
    return files_sha256(slide_files(path), series=_kind(path) != "tiff")


def opened_slide_sha256(slide: Slide) -> str:
    """Content hash of an opened slide, from the files it was opened from (no second header parse)."""
    return files_sha256(list(slide.files), series=slide.info.format == "dicom")


def files_sha256(files: list[Path], series: bool) -> str:
    """Content hash of a slide's files.

    One file (SVS/TIFF): the plain sha256 of its bytes (what ``sha256sum`` prints). A DICOM series (folder or
    one of its files): sha256 over the lines ``"<file name>  <file sha256>\\n"`` of its instance files sorted
    by name, so the same series gives the same hash whichever file or folder path was given.
    """
    if not series and len(files) == 1:
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda p: p.name):
        digest.update(f"{file.name}  {sha256_file(file)}\n".encode())
    return digest.hexdigest()
