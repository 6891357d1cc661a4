"""Opening slides: formats, pyramid geometry, mpp resolution order, metadata, hashes and refusals.

Real data (../shared/data/slides) is compared with independent readers: tiffslide and pydicom directly,
hashlib, and the figures documented in the data README.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
import tiffslide
from PIL import Image

from sequoia_clinic.errors import (
    InputPathError,
    MissingMetadataError,
    OptionError,
    SequoiaError,
    SlideFormatError,
)
from sequoia_clinic.settings import TileSettings
from sequoia_clinic.slides.base import SlideInfo, SlideMetadata
from sequoia_clinic.slides.mpp import mpp_from_tiff_resolution
from sequoia_clinic.slides.opening import open_slide, slide_files, slide_sha256
from sequoia_clinic.slides.tiling import choose_read_level

CMU_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"  # data README


def write_tiff(path: Path, image: np.ndarray, resolution=None, unit=None, description=None) -> Path:
    """A small tiled RGB TIFF (one level) written with tifffile."""
    tifffile.imwrite(
        path,
        image,
        tile=(64, 64),
        photometric="rgb",
        compression="zlib",
        resolution=resolution,
        resolutionunit=unit,
        description=description,
        metadata=None,
    )
    return path


def pink_image(height: int = 256, width: int = 320) -> np.ndarray:
    image = np.full((height, width, 3), 245, np.uint8)
    image[64:192, 64:256] = (180, 90, 160)
    return image


# -- the real slides -------------------------------------------------------------------------------------


def test_cmu_svs_info(cmu_svs):
    with open_slide(cmu_svs) as slide:
        info = slide.info
        assert info.format == "svs" and info.vendor == "aperio"
        assert info.level_dimensions == ((2220, 2967),)
        assert info.level_downsamples == (1.0,)
        assert info.mpp == (0.499, 0.499) and info.mpp_source == "vendor"
        assert info.objective_power == 20.0
        assert info.metadata.app_mag == "20"
        assert info.metadata.scan_date == "12/29/09 09:59:15"
        assert info.metadata.patient_name is None
        assert slide.files == (cmu_svs,)


def test_cmu_dicom_info_and_metadata(cmu_dicom):
    files = sorted(cmu_dicom.glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    volumes = sorted(
        (h for h in headers if h.ImageType[2] == "VOLUME"), key=lambda h: -int(h.TotalPixelMatrixColumns)
    )
    with open_slide(cmu_dicom) as slide:
        info = slide.info
        assert info.format == "dicom"
        assert info.level_dimensions == tuple(
            (int(h.TotalPixelMatrixColumns), int(h.TotalPixelMatrixRows)) for h in volumes
        )
        assert info.level_downsamples == (1.0, 2.0, 4.0, 8.0, 16.0)
        spacing = float(volumes[0].SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[1])
        assert info.mpp == pytest.approx((spacing * 1000, spacing * 1000)) and info.mpp_source == "vendor"
        assert info.objective_power is None  # wsidicomizer does not write ObjectiveLensPower
        assert info.metadata.study_instance_uid == volumes[0].StudyInstanceUID
        assert info.metadata.series_instance_uid == volumes[0].SeriesInstanceUID
        assert info.metadata.patient_id is None  # empty in the file
        assert len(slide.files) == len(files) == 8


def test_one_dcm_opens_its_whole_series(cmu_dicom):
    any_file = sorted(cmu_dicom.glob("*.dcm"))[3]
    with open_slide(cmu_dicom) as whole, open_slide(any_file) as one:
        assert one.info == whole.info
        assert sorted(one.files) == sorted(whole.files)


def test_dicom_level0_is_pixel_identical_to_svs(cmu_svs, cmu_dicom):
    with (
        tiffslide.TiffSlide(cmu_svs) as reference,
        open_slide(cmu_dicom) as dicom,
        open_slide(cmu_svs) as svs,
    ):
        expected = reference.read_region((0, 0), 0, (2220, 2967), as_array=True)
        assert np.array_equal(svs.read_region((0, 0), 0, (2220, 2967)), expected)
        assert np.array_equal(dicom.read_region((0, 0), 0, (2220, 2967)), expected)


def test_dicom_lower_levels_have_true_colours(cmu_svs, cmu_dicom):
    """wsidicomizer's added levels are JFIF (YCbCr) frames tagged RGB; wsidicom alone decodes false colours."""
    with tiffslide.TiffSlide(cmu_svs) as reference, open_slide(cmu_dicom) as dicom:
        full = Image.fromarray(reference.read_region((0, 0), 0, (2220, 2967), as_array=True))
        for level, factor in ((1, 2), (2, 4), (4, 16)):
            expected = np.asarray(full.reduce(factor)).astype(int)
            got = dicom.read_region((0, 0), level, dicom.info.level_dimensions[level]).astype(int)
            height = min(expected.shape[0], got.shape[0]) - 1
            width = min(expected.shape[1], got.shape[1]) - 1
            difference = np.abs(got[:height, :width] - expected[:height, :width])
            assert difference.mean() < 5, (level, difference.mean())


def test_read_region_location_is_level0_and_outside_is_white(tcga_svs):
    with tiffslide.TiffSlide(tcga_svs) as reference, open_slide(tcga_svs, mpp=0.25) as slide:
        inside = slide.read_region((1001, 601), 1, (300, 200))
        assert np.array_equal(inside, reference.read_region((1001, 601), 1, (300, 200), as_array=True))
        width, height = slide.info.level_dimensions[1]
        edge = slide.read_region((int((width - 100) * 2.0005) + 1, 40), 1, (150, 60))
        expected = reference.read_region((int((width - 100) * 2.0005) + 1, 40), 1, (150, 60), as_array=True)
        inside_w = width - int((int((width - 100) * 2.0005) + 1) / 2.0005)
        assert np.array_equal(edge[:, :inside_w], expected[:, :inside_w])
        assert (edge[:, inside_w:] == 255).all()  # tiffslide pads black here
        assert (expected[:, inside_w:] == 0).all()
        assert (slide.read_region((-50, -50), 0, (40, 40)) == 255).all()


def test_dicom_read_region_outside_is_white(cmu_dicom, cmu_svs):
    with open_slide(cmu_dicom) as dicom, open_slide(cmu_svs) as svs:
        region = dicom.read_region((2100, 2900), 0, (300, 200))
        assert np.array_equal(region, svs.read_region((2100, 2900), 0, (300, 200)))
        assert (region[67:, :] == 255).all() and (region[:, 120:] == 255).all()


def test_thumbnail_size_and_content(cmu_svs):
    with tiffslide.TiffSlide(cmu_svs) as reference, open_slide(cmu_svs) as slide:
        thumb = slide.thumbnail(300)
        assert thumb.dtype == np.uint8 and max(thumb.shape[:2]) <= 300 and thumb.shape[0] == 300
        assert thumb.shape[1] == round(2220 * 300 / 2967)
        full = Image.fromarray(reference.read_region((0, 0), 0, (2220, 2967), as_array=True))
        expected = np.asarray(full.resize((thumb.shape[1], thumb.shape[0]), Image.Resampling.BOX)).astype(int)
        assert np.abs(thumb.astype(int) - expected).mean() < 6


def test_tcga_needs_mpp_and_picks_level_despite_2_0005(tcga_svs):
    with pytest.raises(MissingMetadataError, match="--mpp") as caught:
        open_slide(tcga_svs)
    assert tcga_svs.name in str(caught.value)
    with open_slide(tcga_svs, mpp=0.5) as slide:
        assert slide.info.mpp_source == "user" and slide.info.mpp == (0.5, 0.5)
        assert choose_read_level(slide, TileSettings()) == (0, 256)
    with open_slide(tcga_svs, mpp=0.25) as slide:
        assert slide.info.level_downsamples[1] == pytest.approx(2.0005, abs=1e-4)
        assert choose_read_level(slide, TileSettings()) == (1, 256)  # 0.50013 um/px: no resampling
    with tiffslide.TiffSlide(tcga_svs) as reference:  # the pitfall we avoid
        assert reference.get_best_level_for_downsample(2.0) == 0


def test_user_mpp_overrides_vendor(cmu_svs):
    with open_slide(cmu_svs, mpp=0.25) as slide:
        assert slide.info.mpp == (0.25, 0.25) and slide.info.mpp_source == "user"


def test_synthetic_pyramid_levels_and_read_region(mosaic_pyramid):
    """The TCGA checks on a JPEG pyramid of exact downsample 2: the level for an mpp, level-0 locations."""
    with open_slide(mosaic_pyramid) as slide:
        assert slide.info.mpp == (0.5, 0.5) and slide.info.mpp_source == "tiff-resolution"
        assert slide.info.level_downsamples == (1.0, 2.0)
        assert choose_read_level(slide, TileSettings()) == (0, 256)
    with tiffslide.TiffSlide(mosaic_pyramid) as reference, open_slide(mosaic_pyramid, mpp=0.25) as slide:
        assert choose_read_level(slide, TileSettings()) == (1, 256)
        inside = slide.read_region((1001, 601), 1, (300, 200))
        assert np.array_equal(inside, reference.read_region((1001, 601), 1, (300, 200), as_array=True))
        width, _ = slide.info.level_dimensions[1]
        edge = slide.read_region(((width - 100) * 2, 40), 1, (150, 60))
        expected = reference.read_region(((width - 100) * 2, 40), 1, (100, 60), as_array=True)
        assert np.array_equal(edge[:, :100], expected) and (edge[:, 100:] == 255).all()
        assert (slide.read_region((-50, -50), 0, (40, 40)) == 255).all()


@pytest.mark.parametrize("bad", [0.0, -1.0, 500.0])
def test_implausible_user_mpp_is_refused(cmu_svs, bad):
    with pytest.raises(OptionError, match="--mpp"):
        open_slide(cmu_svs, mpp=bad)


# -- mpp resolution order on small synthetic TIFFs -------------------------------------------------------


def test_mpp_from_tiff_resolution_tags(tmp_path):
    path = write_tiff(tmp_path / "res.tif", pink_image(), resolution=(40000, 40000), unit="CENTIMETER")
    with open_slide(path) as slide:
        assert slide.info.format == "tiff"
        assert slide.info.mpp == pytest.approx((0.25, 0.25)) and slide.info.mpp_source == "tiff-resolution"


def test_mpp_from_objective_power_when_nothing_else(tmp_path):
    description = "Aperio Image Library v12.0.0\r\n320x256 (64x64) RAW|AppMag = 40"
    path = write_tiff(tmp_path / "mag.svs", pink_image(), description=description)
    with open_slide(path) as slide:
        assert slide.info.objective_power == 40.0
        assert slide.info.mpp == pytest.approx((0.25, 0.25)) and slide.info.mpp_source == "objective-power"


def test_aperio_mpp_beats_resolution_tags(tmp_path):
    description = "Aperio Image Library v12.0.0\r\n320x256 (64x64) RAW|AppMag = 20|MPP = 0.5"
    path = write_tiff(
        tmp_path / "both.svs",
        pink_image(),
        resolution=(40000, 40000),
        unit="CENTIMETER",
        description=description,
    )
    with open_slide(path) as slide:
        assert slide.info.mpp == (0.5, 0.5) and slide.info.mpp_source == "vendor"


def test_broken_resolution_fractions_are_not_a_pixel_size():
    assert mpp_from_tiff_resolution((40000, 1), (40000, 1), 3) == pytest.approx((0.25, 0.25))  # 1e4/4e4
    assert mpp_from_tiff_resolution((40000, 0), (40000, 1), 3) is None  # 0 denominator
    assert mpp_from_tiff_resolution((40000, 1), (0, 0), 3) is None
    assert mpp_from_tiff_resolution(float("nan"), 40000.0, 3) is None


def test_metadata_repr_masks_values():
    meta = SlideMetadata(patient_name="DOE^JANE", patient_id="MRN-12345", scanner="GT450")
    text = repr(meta)
    assert "patient_name=" in text and "patient_id=" in text and "scanner=" in text
    assert "DOE" not in text and "12345" not in text and "GT450" not in text and "birth" not in text
    info = SlideInfo("svs", None, ((10, 10),), (1.0,), (0.5, 0.5), "user", None, meta)
    assert "DOE" not in repr(info) and "12345" not in str(info)
    assert meta.to_dict()["patient_name"] == "DOE^JANE"  # the values are still there for the report


def test_72_dpi_resolution_is_not_a_pixel_size(tmp_path):
    path = write_tiff(tmp_path / "dpi.tif", pink_image(), resolution=(72, 72), unit="INCH")
    with pytest.raises(MissingMetadataError, match="--mpp"):
        open_slide(path)


# -- hashes ----------------------------------------------------------------------------------------------


def test_slide_sha256(cmu_svs):
    assert slide_sha256(cmu_svs) == hashlib.sha256(cmu_svs.read_bytes()).hexdigest() == CMU_SHA256


def test_dicom_series_sha256(cmu_dicom):
    files = sorted(cmu_dicom.glob("*.dcm"), key=lambda p: p.name)
    lines = "".join(f"{f.name}  {hashlib.sha256(f.read_bytes()).hexdigest()}\n" for f in files)
    expected = hashlib.sha256(lines.encode()).hexdigest()
    assert slide_sha256(cmu_dicom) == expected
    assert slide_sha256(files[5]) == expected  # any file of the series names the same slide
    assert sorted(slide_files(files[0])) == files


# -- refusals --------------------------------------------------------------------------------------------


def _one_line_naming(error: SequoiaError, name: str) -> None:
    text = str(error)
    assert "\n" not in text and name in text


def test_missing_path(tmp_path):
    with pytest.raises(InputPathError) as caught:
        open_slide(tmp_path / "nope.svs")
    _one_line_naming(caught.value, "nope.svs")


def test_text_file_renamed_svs(tmp_path):
    path = tmp_path / "notes.svs"
    path.write_text("this is not a slide\n")
    with pytest.raises(SlideFormatError) as caught:
        open_slide(path)
    _one_line_naming(caught.value, "notes.svs")


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_truncated_svs(tmp_path, cmu_svs, fraction, monkeypatch):
    data = cmu_svs.read_bytes()
    path = tmp_path / "cut.svs"
    path.write_bytes(data[: int(len(data) * fraction)])
    opened, closed = [], []
    original_init, original_close = tiffslide.TiffSlide.__init__, tiffslide.TiffSlide.close
    monkeypatch.setattr(
        tiffslide.TiffSlide,
        "__init__",
        lambda self, *a, **k: (opened.append(self), original_init(self, *a, **k))[1],
    )
    monkeypatch.setattr(
        tiffslide.TiffSlide, "close", lambda self: (closed.append(self), original_close(self))[1]
    )
    with pytest.raises(SlideFormatError, match="truncated") as caught:
        open_slide(path)
    _one_line_naming(caught.value, "cut.svs")
    assert opened and all(any(c is o for c in closed) for o in opened)  # no file handle left open


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(InputPathError, match="empty") as caught:
        open_slide(folder)
    _one_line_naming(caught.value, "empty")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(InputPathError, match="no DICOM"):
        open_slide(tmp_path)


def test_ct_dicom_is_not_a_slide(tmp_path):
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("CT_small.dcm"))  # ships with pydicom (no download)
    path = tmp_path / "ct.dcm"
    path.write_bytes(source.read_bytes())
    for target in (path, tmp_path):
        with pytest.raises(SlideFormatError, match="CT image, not a whole-slide image") as caught:
            open_slide(target)
        _one_line_naming(caught.value, str(target.name))


def test_malformed_dicom(malformed_dicom):
    with pytest.raises(SlideFormatError) as caught:
        open_slide(malformed_dicom)
    _one_line_naming(caught.value, malformed_dicom.name)
