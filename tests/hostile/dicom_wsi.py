"""DICOM WSI series written by code (pydicom), for the hostile DICOM cases: no binary files committed.

One instance per pyramid level, TILED_FULL, JPEG baseline (or JPEG 2000) frames encapsulated with a
Basic Offset Table. ``frames`` lets a case replace the encoded frames (tiny or damaged ones).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, generate_uid

VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
MPP = 0.5


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def tiles_of(level: np.ndarray, tile: int) -> list[np.ndarray]:
    """The level cut into ``tile`` x ``tile`` frames in row-major order, edges padded with white."""
    height, width = level.shape[:2]
    rows, cols = -(-height // tile), -(-width // tile)
    padded = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
    padded[:height, :width] = level[..., :3]
    return [
        padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(rows) for c in range(cols)
    ]


def jpeg_frames(level: np.ndarray, tile: int) -> list[bytes]:
    return [imagecodecs.jpeg8_encode(np.ascontiguousarray(t), level=90) for t in tiles_of(level, tile)]


def write_level(
    path: Path,
    size: tuple[int, int],
    tile: int,
    frames: Sequence[bytes],
    downsample: int,
    uids: dict[str, str],
    transfer_syntax: str = JPEGBaseline8Bit,
) -> Path:
    """One VOLUME instance of ``size`` (w, h) px stored as ``frames`` (row-major, ``tile`` px)."""
    width, height = size
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VL_WSI
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = VL_WSI
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.FrameOfReferenceUID, ds.PyramidUID = uids["frame"], uids["pyramid"]
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=uids["dimension"])])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.Modality = "SM"
    ds.Manufacturer = "sequoia-clinic tests"
    ds.ContentDate, ds.ContentTime = "20240101", "120000"
    ds.SeriesNumber, ds.InstanceNumber = 1, downsample
    ds.PatientName, ds.PatientID = "", ""
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422" if transfer_syntax == JPEGBaseline8Bit else "RGB"
    ds.PlanarConfiguration = 0
    ds.NumberOfFrames = len(frames)
    ds.Rows = ds.Columns = tile
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = width, height
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.ImagedVolumeWidth = width * MPP * downsample / 1000
    ds.ImagedVolumeHeight = height * MPP * downsample / 1000
    ds.ImagedVolumeDepth = 0.001
    ds.TotalPixelMatrixOriginSequence = DicomSequence(
        [_item(XOffsetInSlideCoordinateSystem=20.0, YOffsetInSlideCoordinateSystem=40.0)]
    )
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    illumination = _item(
        CodeValue="111744", CodingSchemeDesignator="DCM", CodeMeaning="Brightfield illumination"
    )
    colour = _item(CodeValue="414298005", CodingSchemeDesignator="SCT", CodeMeaning="Full Spectrum")
    ds.OpticalPathSequence = DicomSequence(
        [
            _item(
                OpticalPathIdentifier="0",
                IlluminationTypeCodeSequence=DicomSequence([illumination]),
                IlluminationColorCodeSequence=DicomSequence([colour]),
            )
        ]
    )
    spacing = MPP * downsample / 1000
    ds.SharedFunctionalGroupsSequence = DicomSequence(
        [
            _item(
                PixelMeasuresSequence=DicomSequence(
                    [_item(PixelSpacing=[spacing, spacing], SliceThickness=0.001)]
                ),
                WholeSlideMicroscopyImageFrameTypeSequence=DicomSequence(
                    [_item(FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"])]
                ),
            )
        ]
    )
    ds.PixelData = encapsulate(list(frames), has_bot=True)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def new_uids() -> dict[str, str]:
    return {key: generate_uid() for key in ("study", "series", "frame", "pyramid", "dimension")}


def write_series(
    folder: Path,
    levels: Sequence[np.ndarray],
    tile: int = 256,
    change: Callable[[int, list[bytes]], list[bytes]] | None = None,
) -> Path:
    """A DICOM WSI series (one .dcm per level, level ``i`` downsampled by 2**i) of the given pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    uids = new_uids()
    for index, level in enumerate(levels):
        frames = jpeg_frames(level, tile)
        if change is not None:
            frames = change(index, frames)
        write_level(
            folder / f"level{index}.dcm", (level.shape[1], level.shape[0]), tile, frames, 2**index, uids
        )
    return folder


def fragment_spans(path: Path) -> list[tuple[int, int]]:
    """(position, length) of each pixel-data fragment of an encapsulated instance, by walking its items.

    Written here from the DICOM encoding rules (PS3.5 A.4), independently of the reader under test: the
    Pixel Data element (explicit VR little endian, undefined length) holds the Basic Offset Table item,
    then one item per fragment, then a sequence delimiter.
    """
    with open(path, "rb") as handle:
        pydicom.dcmread(handle, stop_before_pixels=True)
        header = handle.read(12)
        assert header[:4] == b"\xe0\x7f\x10\x00" and header[8:] == b"\xff\xff\xff\xff", header.hex()
        spans = []
        while True:
            tag, length = struct.unpack("<4sI", handle.read(8))
            if tag == b"\xfe\xff\xdd\xe0":  # sequence delimitation item
                break
            assert tag == b"\xfe\xff\x00\xe0", tag.hex()
            spans.append((handle.tell(), length))
            handle.seek(length, 1)
    return spans[1:]  # the first item is the Basic Offset Table


def damage_frames(path: Path, frames: Sequence[int], seed: int = 1) -> Path:
    """Overwrite the bytes of the given frames (one fragment each) of a written instance with noise."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    spans = fragment_spans(path)
    for frame in frames:
        start, length = spans[frame]
        data[start : start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def j2k_bomb(folder: Path, side: int = 32_768, tile: int = 512, smallest: int = 8192) -> Path:
    """A JPEG 2000 series declaring ``side`` x ``side`` px (a pyramid down to ``smallest``) in frames of a
    few hundred bytes: every frame is the same valid, uniform codestream, ratio above 1000:1."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = imagecodecs.jpeg2k_encode(np.full((tile, tile, 3), 240, np.uint8), level=0, codecformat="j2k")
    uids = new_uids()
    size, downsample = side, 1
    while size >= smallest:
        count = (-(-size // tile)) ** 2
        write_level(
            folder / f"level{downsample}.dcm",
            (size, size),
            tile,
            [frame] * count,
            downsample,
            uids,
            transfer_syntax=JPEG2000Lossless,
        )
        size, downsample = size // 2, downsample * 2
    return folder
