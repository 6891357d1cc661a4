"""``sequoia-clinic inspect``: through Typer's CliRunner and once as a real subprocess.

Values are checked against independent sources (tiffslide/pydicom headers, Pillow reading the thumbnail);
bad inputs must give exit code 2, one line naming the file, no traceback, and no output file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiffslide
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
JSON_KEYS = [
    "slide", "format", "vendor", "width", "height", "levels", "mpp", "mpp_source", "objective_power",
    "tissue_fraction", "tiles", "thumbnail", "qc_warnings",
]  # fmt: skip
TILE_KEYS = [
    "target_mpp", "tile_px", "read_level", "read_px", "level_mpp", "level_downsample", "tile_size_level0",
    "grid_rows", "grid_columns", "total", "candidates", "kept",
]  # fmt: skip


def inspect_json(cli, *args: str) -> dict:
    result = cli(["inspect", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_inspect_svs_json_and_thumbnail(cli, cmu_svs, tmp_path):
    picture = tmp_path / "sub" / "cmu.png"
    report = inspect_json(cli, str(cmu_svs), "--thumbnail", str(picture))
    assert list(report) == JSON_KEYS and list(report["tiles"]) == TILE_KEYS
    with tiffslide.TiffSlide(cmu_svs) as reference:
        assert (report["width"], report["height"]) == reference.dimensions
        assert report["mpp"] == [float(reference.properties["tiffslide.mpp-x"])] * 2
        assert report["objective_power"] == float(reference.properties["tiffslide.objective-power"])
    assert report["format"] == "svs" and report["mpp_source"] == "vendor"
    assert report["tiles"]["read_px"] == 256 and report["tiles"]["total"] == 88
    assert report["tiles"]["kept"] == 42 and report["tissue_fraction"] == pytest.approx(0.333, abs=0.03)
    assert report["thumbnail"] == str(picture)
    with Image.open(picture) as image:
        assert image.format == "PNG" and max(image.size) == 1024 and image.mode == "RGB"
        assert np.asarray(image).reshape(-1, 3).tolist().count([20, 60, 220]) > 1000  # outlined tiles
    assert [p.name for p in picture.parent.iterdir()] == ["cmu.png"]  # no temporary file left


def test_inspect_dicom_agrees_with_svs(cli, cmu_svs, cmu_dicom):
    svs, dicom = inspect_json(cli, str(cmu_svs)), inspect_json(cli, str(cmu_dicom))
    assert dicom["format"] == "dicom" and len(dicom["levels"]) == 5
    assert dicom["mpp"] == svs["mpp"] == [0.499, 0.499]
    # the 8 um/px masks come from different pixels (DICOM has its own lossy lower levels), so the coarse
    # candidate count may differ by a tile; the decisive 20x pixel check gives the same kept tiles
    assert abs(dicom["tiles"].pop("candidates") - svs["tiles"].pop("candidates")) <= 2
    assert dicom["tiles"] == svs["tiles"]


def test_inspect_text_output(cli, cmu_svs):
    result = cli(["inspect", str(cmu_svs)])
    assert result.exit_code == 0
    assert "0.499 x 0.499 um/px (source: vendor)" in result.stdout
    assert "42 kept of 88" in result.stdout and "no resampling" in result.stdout


def test_inspect_tcga_needs_mpp(cli, tcga_svs, tmp_path):
    picture = tmp_path / "tcga.png"
    result = cli(["inspect", str(tcga_svs), "--thumbnail", str(picture)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--mpp" in result.stderr and tcga_svs.name in result.stderr
    assert not picture.exists()
    report = inspect_json(cli, str(tcga_svs), "--mpp", "0.25")
    assert report["mpp_source"] == "user" and report["tiles"]["read_level"] == 1
    assert report["tiles"]["read_px"] == 256 and report["levels"][1]["downsample"] == pytest.approx(
        2.0005, abs=1e-4
    )
    assert inspect_json(cli, str(tcga_svs), "--mpp", "0.5")["tiles"]["read_level"] == 0


def test_inspect_synthetic_pyramid_and_missing_mpp(cli, mosaic_pyramid, no_mpp_tiff, tmp_path):
    """The TCGA checks on synthetic slides: --mpp picks the pyramid level; no pixel size is one line."""
    picture = tmp_path / "none.png"
    result = cli(["inspect", str(no_mpp_tiff), "--thumbnail", str(picture)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--mpp" in result.stderr and no_mpp_tiff.name in result.stderr
    assert not picture.exists()
    report = inspect_json(cli, str(mosaic_pyramid), "--mpp", "0.25")
    with tiffslide.TiffSlide(mosaic_pyramid) as reference:
        assert [(v["width"], v["height"]) for v in report["levels"]] == list(reference.level_dimensions)
    assert report["mpp_source"] == "user" and report["levels"][1]["downsample"] == 2.0
    assert report["tiles"]["read_level"] == 1 and report["tiles"]["read_px"] == 256
    native = inspect_json(cli, str(mosaic_pyramid))
    assert native["mpp"] == [0.5, 0.5] and native["mpp_source"] == "tiff-resolution"
    assert native["tiles"]["read_level"] == 0 and native["tiles"]["read_px"] == 256


def _bad_inputs(tmp: Path, cmu_svs: Path) -> dict[str, Path]:
    from pydicom.data import get_testdata_file

    text = tmp / "notes.svs"
    text.write_text("not a slide\n")
    truncated = tmp / "truncated.svs"
    truncated.write_bytes(cmu_svs.read_bytes()[: cmu_svs.stat().st_size // 2])
    empty = tmp / "empty_folder"
    empty.mkdir()
    ct = tmp / "ct_image.dcm"
    ct.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    return {
        "missing": tmp / "missing.svs",
        "text": text,
        "truncated": truncated,
        "empty": empty,
        "ct": ct,
    }


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "empty", "ct", "malformed"])
def test_bad_inputs_exit_2_with_one_line(cli, case, tmp_path, cmu_svs, request):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad = _bad_inputs(inputs, cmu_svs)
    target = request.getfixturevalue("malformed_dicom") if case == "malformed" else bad[case]
    out = tmp_path / "out"
    out.mkdir()
    result = cli(["inspect", str(target), "--thumbnail", str(out / "thumb.png")])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and target.name in lines[0]
    assert "Traceback" not in result.output
    assert list(out.iterdir()) == []  # nothing written


def test_unsupported_thumbnail_type_is_refused_before_work(cli, cmu_svs, tmp_path):
    result = cli(["inspect", str(cmu_svs), "--thumbnail", str(tmp_path / "t.gif")])
    assert result.exit_code == 2 and "--thumbnail" in result.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # two interpreter start-ups (the CLI imports every command module)
def test_inspect_as_a_real_process(cmu_dicom, malformed_dicom, tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    one_file = sorted(cmu_dicom.glob("*.dcm"))[0]
    done = subprocess.run(
        [sys.executable, "-m", "sequoia_clinic", "inspect", str(one_file), "--json"],
        capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["format"] == "dicom" and report["tiles"]["kept"] == 42
    bad = subprocess.run(  # pydicom warns about this file: nothing of it may reach stderr
        [sys.executable, "-m", "sequoia_clinic", "inspect", str(malformed_dicom), "--thumbnail", "t.png"],
        capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    lines = bad.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {malformed_dicom}: ")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_thumbnail_folder_is_refused_before_work(cli, cmu_svs, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    picture = blocker / "pictures" / "t.png"
    result = cli(["inspect", str(cmu_svs), "--thumbnail", str(picture)])
    assert result.exit_code == 2 and str(picture.parent) in result.stderr and "writable" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
