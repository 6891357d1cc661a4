"""DICOM WSI (VL Whole Slide Microscopy Image) series, read with wsidicom on top of pydicom.

A slide is one series: either every instance in a folder, or the instances beside a given ``.dcm`` that share
its SeriesInstanceUID. We check the SOP class ourselves first so that a CT or an unrelated DICOM file gets a
clear message instead of wsidicom's "level files not found".

Quirks handled here: wsidicom numbers levels by log2 of the downsample (not list position) and takes region
locations in the level's own pixels; it raises on out-of-bounds requests (the base class clips first).

Hostile series are handled as the TIFF backend handles hostile files: at open time, before any frame is
decoded, the stored frame byte counts (from the pixel data's offset table / fragment headers, never decoded)
are checked against the compression-ratio budget of ``slides/base.py``, and frame data that runs past the end
of its file is refused as truncated. A frame whose own JPEG / JPEG 2000 header declares more pixels than the
series' frame size is not decoded. A frame that cannot be decoded is read as white and recorded
(:meth:`Slide.corrupt_tiles`); past the allowance of ``slides/base.py`` the slide is refused with
:class:`~sequoia_clinic.errors.CorruptTileError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
from wsidicom import WsiDicom

from sequoia_clinic.errors import CorruptTileError, InputPathError, SlideFormatError
from sequoia_clinic.slides.base import (
    Slide,
    SlideInfo,
    SlideMetadata,
    assemble_region,
    check_compression_ratio,
)
from sequoia_clinic.slides.mpp import MppCandidates, resolve_mpp
from sequoia_clinic.slides.quiet import captured_library_output
from sequoia_clinic.slides.sniff import is_dicom_file

VL_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_FIX_SERIES = (
    "Pass a folder (or one .dcm) of a complete DICOM WSI series with pixel spacing and tiling information."
)
_FIX_DAMAGED = "The DICOM files are truncated or damaged; copy or export the slide again."


def _header(path: Path) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None


def _describe(dataset: pydicom.Dataset) -> str:
    modality = str(dataset.get("Modality", "") or "").strip()
    return f"a DICOM {modality} image" if modality else "a DICOM object"


def _select_series(
    origin: Path, headers: dict[Path, pydicom.Dataset], series_uid: str | None
) -> dict[Path, pydicom.Dataset]:
    """Headers of one VL WSI series, by file (sorted); raises when there is none or more than one."""
    slides = {path: ds for path, ds in headers.items() if str(ds.get("SOPClassUID", "")) == VL_WSI_SOP_CLASS}
    if not slides:
        first = next(iter(headers.values()), None)
        what = _describe(first) if first is not None else "no readable DICOM object"
        raise SlideFormatError(
            f"holds {what}, not a whole-slide image (VL Whole Slide Microscopy)",
            origin,
            "Pass a DICOM WSI series (SOP class 1.2.840.10008.5.1.4.1.1.77.1.6) or an .svs file.",
        )
    groups: dict[str, list[Path]] = {}
    for path, dataset in slides.items():
        groups.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append(path)
    if series_uid is not None:
        return {path: slides[path] for path in sorted(groups.get(series_uid, []))}
    if len(groups) > 1:
        raise InputPathError(
            f"holds {len(groups)} slide series",
            origin,
            "Pass one .dcm file of the series you want; the rest of its series is found beside it.",
        )
    return {path: slides[path] for path in sorted(next(iter(groups.values())))}


def series_headers(path: Path) -> dict[Path, pydicom.Dataset]:
    """Headers (no pixels) of the instances of the slide series that ``path`` (a folder or one ``.dcm``)
    designates, by file path in sorted order. The only place a slide's DICOM headers are parsed."""
    with captured_library_output():  # pydicom validates values lazily and warns about e.g. long UIDs
        return _series_headers(path)


def series_files(path: Path) -> list[Path]:
    """The instance files of the slide series that ``path`` (a folder or one ``.dcm``) designates."""
    return list(series_headers(path))


def _series_headers(path: Path) -> dict[Path, pydicom.Dataset]:
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.is_file() and is_dicom_file(p))
        if not candidates:
            raise InputPathError(
                "is empty" if not any(path.iterdir()) else "holds no DICOM files",
                path,
                "Pass an .svs/.tif file or a folder of DICOM WSI instances.",
            )
        headers = {p: ds for p in candidates if (ds := _header(p)) is not None}
        return _select_series(path, headers, None)
    own = _header(path)
    if own is None:
        raise SlideFormatError("is not a readable DICOM file", path, "The file is damaged; export it again.")
    if str(own.get("SOPClassUID", "")) != VL_WSI_SOP_CLASS:
        _select_series(path, {path: own}, None)  # raises the "not a whole-slide image" error
    siblings = sorted(p for p in path.parent.iterdir() if p.is_file() and p != path and is_dicom_file(p))
    headers = {path: own} | {p: ds for p in siblings if (ds := _header(p)) is not None}
    return _select_series(path, headers, str(own.get("SeriesInstanceUID", "")))


def _text(dataset: pydicom.Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _specimen_description(dataset: pydicom.Dataset) -> str | None:
    for item in dataset.get("SpecimenDescriptionSequence", []) or []:
        for keyword in ("SpecimenShortDescription", "SpecimenDetailedDescription"):
            text = _text(item, keyword)
            if text:
                return text
    return None


def _specimen_label(dataset: pydicom.Dataset) -> str | None:
    """What a report prints as the specimen: the first description item's short description or identifier."""
    items = dataset.get("SpecimenDescriptionSequence", []) or []
    if not items:
        return None
    return _text(items[0], "SpecimenShortDescription") or _text(items[0], "SpecimenIdentifier")


def _iso_day(value: str | None) -> str | None:
    """DICOM DA/DT (YYYYMMDD...) → 'YYYY-MM-DD'; None when it does not start with eight digits."""
    if value and len(value) >= 8 and value[:8].isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    return None


def _metadata(dataset: pydicom.Dataset) -> SlideMetadata:
    manufacturer = _text(dataset, "Manufacturer")
    model = _text(dataset, "ManufacturerModelName")
    specimen_id = _text(dataset, "ContainerIdentifier")
    acquired = _text(dataset, "AcquisitionDateTime") or _text(dataset, "ContentDate")
    return SlideMetadata(
        patient_name=_text(dataset, "PatientName"),
        patient_id=_text(dataset, "PatientID"),
        patient_birth_date=_text(dataset, "PatientBirthDate"),
        patient_sex=_text(dataset, "PatientSex"),
        accession_number=_text(dataset, "AccessionNumber"),
        study_date=_text(dataset, "StudyDate"),
        study_time=_text(dataset, "StudyTime"),
        study_id=_text(dataset, "StudyID"),
        study_description=_text(dataset, "StudyDescription"),
        study_instance_uid=_text(dataset, "StudyInstanceUID"),
        series_instance_uid=_text(dataset, "SeriesInstanceUID"),
        sop_class_uid=_text(dataset, "SOPClassUID"),
        sop_instance_uid=_text(dataset, "SOPInstanceUID"),
        referring_physician_name=_text(dataset, "ReferringPhysicianName"),
        institution_name=_text(dataset, "InstitutionName"),
        specimen_identifier=specimen_id,
        specimen_description=_specimen_description(dataset),
        specimen_label=_specimen_label(dataset),
        manufacturer=manufacturer,
        scanner=" ".join(part for part in (manufacturer, model) if part) or None,
        device_serial_number=_text(dataset, "DeviceSerialNumber"),
        barcode=_text(dataset, "BarcodeValue"),
        scan_date=acquired,
        scan_day=_iso_day(acquired or _text(dataset, "StudyDate")),
    )


def _objective_power(dataset: pydicom.Dataset) -> float | None:
    for item in dataset.get("OpticalPathSequence", []) or []:
        power = item.get("ObjectiveLensPower")
        if power not in (None, ""):
            try:
                return float(power)
            except (TypeError, ValueError):
                return None
    return None


_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_JPEG_2000 = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")


def jpeg_colour_markers(data: bytes) -> tuple[bool, int | None]:
    """(has JFIF APP0, Adobe APP14 transform or None) from the marker segments before the scan.

    Hand-written (a short walk over JPEG segment headers) because no installed library exposes it and we
    need it to pick the colour space: see :func:`decode_frame`.
    """
    jfif, adobe = False, None
    position = 2 if data[:2] == b"\xff\xd8" else len(data)
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan: no more header segments
            break
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        body = data[position + 4 : position + 2 + length]
        if marker == 0xE0 and body.startswith(b"JFIF\x00"):
            jfif = True
        elif marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
            adobe = body[11]
        position += 2 + length
    return jfif, adobe


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start of frame (not DHT, JPG, DAC)


def jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a JPEG stream's start-of-frame header declares; None when there is none before the scan."""
    position = 2 if data[:2] == b"\xff\xd8" else len(data)
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
            continue
        if marker == 0xDA:
            break
        if marker in _SOF_MARKERS and position + 9 <= len(data):
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return width, height
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def jpeg2000_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the image a JPEG 2000 codestream's SIZ segment declares (raw or in a JP2 box)."""
    start = data.find(b"\xff\x4f\xff\x51")  # start of codestream, then the SIZ marker (after any JP2 boxes)
    if start < 0 or start + 22 > len(data):
        return None
    siz = start + 4  # Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4)
    x_size, y_size = (int.from_bytes(data[siz + i : siz + i + 4], "big") for i in (4, 8))
    x_offset, y_offset = (int.from_bytes(data[siz + i : siz + i + 4], "big") for i in (12, 16))
    return x_size - x_offset, y_size - y_offset


def declared_frame_size(data: bytes, transfer_syntax: str) -> tuple[int, int] | None:
    """The pixel size a JPEG / JPEG 2000 frame declares in its own header (read without decoding)."""
    if transfer_syntax == _JPEG_BASELINE:
        return jpeg_frame_size(data)
    if transfer_syntax in _JPEG_2000:
        return jpeg2000_frame_size(data)
    return None


def decode_frame(data: bytes, transfer_syntax: str, photometric: str) -> np.ndarray | None:
    """Decode one JPEG / JPEG 2000 frame to RGB; None for transfer syntaxes left to wsidicom.

    The colour space follows the JPEG stream's own markers first (JFIF means YCbCr; Adobe transform 0 means
    RGB) and the DICOM PhotometricInterpretation only for streams without markers (raw Aperio tiles copied
    into DICOM). wsidicom 0.36 instead trusts "RGB" over a JFIF marker and returns false colours for
    series such as the wsidicomizer levels in our test data, hence this small decoder.
    """
    if transfer_syntax == _JPEG_BASELINE:
        jfif, adobe = jpeg_colour_markers(data)
        if not jfif and adobe is None and photometric == "RGB":
            return imagecodecs.jpeg8_decode(data, colorspace="RGB", outcolorspace="RGB")
        return imagecodecs.jpeg8_decode(data)
    if transfer_syntax in _JPEG_2000:
        return imagecodecs.jpeg2k_decode(data)
    return None


class DicomSlide(Slide):
    """A DICOM WSI series opened with wsidicom (its first pyramid, first focal plane and optical path)."""

    def __init__(self, path: Path, info: SlideInfo, files: tuple[Path, ...], wsi: WsiDicom) -> None:
        super().__init__(path, info, files)
        self._wsi = wsi
        levels = list(wsi.levels)
        self._numbers = [int(level.level) for level in levels]  # wsidicom numbers levels by log2(downsample)
        image_data = [level.default_instance.image_data for level in levels]
        self._codecs = [
            (str(data.transfer_syntax), str(data.photometric_interpretation)) for data in image_data
        ]
        self._tile_sizes = [(int(level.tile_size.width), int(level.tile_size.height)) for level in levels]

    def close(self) -> None:
        self._wsi.close()

    def _read_inside(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return assemble_region(
            self.info.level_dimensions[level],
            self._tile_sizes[level],
            lambda col, row: self.read_native_tile(level, col, row),
            (x, y),
            (width, height),
        )

    def native_tile_size(self, level: int) -> tuple[int, int]:
        return self._tile_sizes[level]

    def read_native_tile(self, level: int, column: int, row: int) -> np.ndarray:
        level_w, level_h = self.info.level_dimensions[level]
        tile_w, tile_h = self._tile_sizes[level]
        width = min(tile_w, level_w - column * tile_w)
        height = min(tile_h, level_h - row * tile_h)
        transfer_syntax, _ = self._codecs[level]
        data: bytes | None = None
        if transfer_syntax == _JPEG_BASELINE or transfer_syntax in _JPEG_2000:
            try:  # reading the stored bytes fails only for a broken file, not for damaged pixel data
                with captured_library_output():
                    data = self._wsi.read_encoded_tile(
                        self._numbers[level], (column, row), crop_to_image_boundary=False
                    )
            except Exception as exc:
                raise SlideFormatError(
                    f"a DICOM frame could not be read ({type(exc).__name__})", self.path, _FIX_DAMAGED
                ) from exc
        self._tile_decoded()
        try:
            tile = _rgb(self._decode_tile(level, column, row, data))
            if tile.shape[0] < height or tile.shape[1] < width:
                raise ValueError("a frame is smaller than the series says")
        except Exception as exc:  # damaged frame data: white, counted, refused above the allowance
            error = CorruptTileError(
                f"a DICOM frame could not be decoded ({type(exc).__name__})", self.path, _FIX_DAMAGED
            )
            return self._tile_corrupt(level, column, row, error, (height, width))
        return tile[:height, :width]

    def _decode_tile(self, level: int, column: int, row: int, data: bytes | None) -> np.ndarray:
        """Decode one frame: ``data`` (its stored bytes) ourselves, else through wsidicom's codecs."""
        transfer_syntax, photometric = self._codecs[level]
        if data is not None:
            declared = declared_frame_size(data, transfer_syntax)
            tile_w, tile_h = self._tile_sizes[level]
            if declared is None or declared[0] > tile_w or declared[1] > tile_h:
                raise ValueError(
                    f"the frame declares {declared} px in a series of {tile_w}x{tile_h} px frames"
                )
            decoded = decode_frame(data, transfer_syntax, photometric)
            if decoded is not None:
                return decoded
        with captured_library_output():  # wsidicom and Pillow report damaged data through logging/warnings
            return np.asarray(self._wsi.read_tile(self._numbers[level], (column, row), as_array=True))


def _rgb(array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3], dtype=np.uint8)


def _open_wsi(origin: Path, files: Iterable[Path]) -> WsiDicom:
    with captured_library_output():
        try:
            return WsiDicom.open(list(files))
        except Exception as exc:
            raise SlideFormatError(
                f"the DICOM series is not a readable slide pyramid ({type(exc).__name__})",
                origin,
                _FIX_SERIES,
            ) from exc


def _frame_index(image_data: Any) -> list[tuple[Path, list[tuple[int, int]]]] | None:
    """(file, [(position, length) of each frame]) of one level's instance files, from the offset tables.

    wsidicom builds this index (Basic / Extended Offset Table, else the fragment item headers) to read
    frames, without decoding any. None when this wsidicom version does not expose it per file.
    """
    readers = getattr(image_data, "_readers", None)
    if not readers:
        return None
    index = []
    for reader in readers:
        frames = getattr(reader, "frame_index", None)
        filepath = getattr(reader, "filepath", None)
        if frames is None or filepath is None:
            return None
        index.append((Path(str(filepath)), [(int(pos), int(length)) for pos, length in frames]))
    return index


def _check_frames(path: Path, wsi: WsiDicom) -> None:
    """Refuse a series whose frames run past their file or imply a decompression bomb (before any decode)."""
    decoded = stored = 0
    for level in wsi.levels:
        image_data = level.default_instance.image_data
        tile = image_data.tile_size
        frame_bytes = int(tile.width) * int(tile.height) * int(image_data.samples_per_pixel)
        try:
            index = _frame_index(image_data)
        except Exception as exc:
            raise SlideFormatError(
                f"the DICOM pixel data cannot be indexed into frames ({type(exc).__name__})",
                path,
                _FIX_DAMAGED,
            ) from exc
        if index is None:  # no per-frame byte counts: the files' sizes bound what the frames can hold
            files = {Path(str(file)) for file in getattr(image_data, "files", None) or []}
            if files:
                columns = -(-int(level.size.width) // int(tile.width))
                decoded += columns * -(-int(level.size.height) // int(tile.height)) * frame_bytes
                stored += sum(file.stat().st_size for file in files)
            continue
        for file, frames_in_file in index:
            size = file.stat().st_size
            if any(pos + length > size for pos, length in frames_in_file):
                raise SlideFormatError(
                    f"{file.name} is shorter than its frame data (truncated)", path, _FIX_DAMAGED
                )
            decoded += sum(1 for _, length in frames_in_file if length) * frame_bytes
            stored += sum(length for _, length in frames_in_file)
    check_compression_ratio(
        path,
        decoded,
        stored,
        "This is not a slide the tool can read safely; check the DICOM series or export it again.",
    )


def open_dicom(path: Path, user_mpp: float | None) -> DicomSlide:
    """Open a DICOM WSI series from a folder or one of its files (each header is parsed once, here).

    Before any frame is decoded, the series is checked against the compression-ratio budget.
    """
    headers = series_headers(path)
    files = list(headers)
    wsi = _open_wsi(path, files)
    try:
        with captured_library_output():
            _check_frames(path, wsi)
            info = _slide_info(path, user_mpp, _level0_header(headers), wsi)
    except Exception:
        wsi.close()
        raise
    return DicomSlide(path, info, tuple(files), wsi)


def _slide_info(path: Path, user_mpp: float | None, header: pydicom.Dataset, wsi: WsiDicom) -> SlideInfo:
    levels = list(wsi.levels)
    spacings = [_spacing(level) for level in levels]
    base = spacings[0]
    vendor_mpp = (base[0] * 1000.0, base[1] * 1000.0) if base else None
    power = _objective_power(header)
    mpp, source = resolve_mpp(path, user_mpp, MppCandidates(vendor=vendor_mpp, objective_power=power))
    width0 = float(levels[0].size.width)
    return SlideInfo(
        format="dicom",
        vendor=_text(header, "Manufacturer"),
        level_dimensions=tuple((int(lv.size.width), int(lv.size.height)) for lv in levels),
        level_downsamples=tuple(
            spacing[0] / base[0] if spacing and base else width0 / float(lv.size.width)
            for lv, spacing in zip(levels, spacings, strict=True)
        ),
        mpp=mpp,
        mpp_source=source,
        objective_power=power,
        metadata=_metadata(header),
    )


def _spacing(level: Any) -> tuple[float, float] | None:
    """(x, y) pixel spacing of a wsidicom level in mm, or None when the series does not record it."""
    spacing = getattr(level, "pixel_spacing", None)
    if spacing is None:
        return None
    return float(spacing.width), float(spacing.height)


def _level0_header(headers: dict[Path, pydicom.Dataset]) -> pydicom.Dataset:
    """The full-resolution instance's header (largest TotalPixelMatrixColumns among VOLUME instances).

    Patient and study attributes are the same in every instance of a series; the level-0 VOLUME instance is
    the one a report references, so its SOP instance UID is the one recorded in the metadata.
    """

    def rank(dataset: pydicom.Dataset) -> tuple[bool, int]:
        image_type = [str(v).upper() for v in (dataset.get("ImageType") or [])]
        return "VOLUME" in image_type, int(dataset.get("TotalPixelMatrixColumns", 0) or 0)

    return max(headers.values(), key=rank)
