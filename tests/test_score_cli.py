"""End-to-end tests of ``sequoia-clinic score`` and ``demo`` on the real CMU slide with the demo bundle.

The PDF is read back with pypdf, result.json is validated against the JSON Schema, and the DICOM report is
read back with pydicom — each an independent reader of what we wrote.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pypdf import PdfReader

from sequoia_clinic.report.result import without_volatile
from sequoia_clinic.report.schema import validate_result

PATIENT = ["--patient-name", "Testperson, Alice", "--patient-id", "PID-778899", "--birth-date", "1970-02-03"]
PATIENT += ["--sex", "F", "--accession", "ACC-55443"]
KEY = ["--pseudonym-key", "test-secret"]


def _score(cli, slide: Path, out: Path, *extra: str) -> object:
    # the CMU slide (0.54 mm², 42 tiles) is below the adequacy minimums: reported with the flag
    args = ["score", str(slide), "--out", str(out), "--no-cache", "--quiet", "--allow-inadequate", *extra]
    return cli(args)


def _pdf_pages(path: Path) -> list[str]:
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(path.read_bytes())).pages]


@pytest.fixture(scope="module")
def svs_run(cli, cmu_svs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("svs") / "report"
    result = _score(cli, cmu_svs, out, "--format", "pdf,json,dicom", *PATIENT)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def dicom_with_patient(cmu_dicom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the DICOM WSI series whose instances carry patient attributes (the original has none)."""
    folder = tmp_path_factory.mktemp("dicom") / "slide.dicom"
    folder.mkdir()
    for source in sorted(cmu_dicom.iterdir()):
        ds = pydicom.dcmread(source)
        ds.PatientName = "Dicomperson^Beatrice"
        ds.PatientID = "DCM-123456"
        ds.PatientBirthDate = "19650708"
        ds.PatientSex = "F"
        ds.AccessionNumber = "DACC-9876"
        ds.save_as(folder / source.name, enforce_file_format=True)
    return folder


def test_svs_outputs_exist_and_pdf_holds_fields(svs_run: Path) -> None:
    assert sorted(p.name for p in svs_run.iterdir()) == ["report.dcm", "report.pdf", "result.json"]
    pages = _pdf_pages(svs_run / "report.pdf")
    assert len(pages) >= 2
    for text in pages:
        assert "DEMONSTRATION" in text and "NOT FOR CLINICAL USE" in text
    first = pages[0]
    for field in ("Testperson, Alice", "PID-778899", "1970-02-03", "ACC-55443"):
        assert field in first
    result = json.loads((svs_run / "result.json").read_text())
    group = result["risk"]["group"]
    assert group.upper() in first.upper()


def test_svs_result_json_is_valid_and_consistent(svs_run: Path, cmu_svs: Path) -> None:
    result = json.loads((svs_run / "result.json").read_text())
    validate_result(result)
    assert result["slide"]["sha256"] == "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
    assert result["slide"]["mpp"] == pytest.approx(0.499)
    assert result["demo"] is True
    assert result["qc"]["tiles_used"] == result["qc"]["tiles_kept"] == 42
    risk = result["risk"]
    # absolute risk is 1 - S0(t)^exp(lp): recompute from the shipped model's own baseline survival
    model = json.loads((Path(__file__).resolve().parents[1] / "models/risk/gse7390-wang76.json").read_text())
    s0 = model["baseline_survival_at"]
    lp = risk["linear_predictor"]
    by_horizon = {a["horizon"]: a for a in risk["absolute_risk"]}
    for horizon in (5, 10):
        expected = 1 - float(s0[str(horizon)]) ** (2.718281828459045**lp)
        assert by_horizon[horizon]["risk"] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_svs_dicom_report_round_trips(svs_run: Path) -> None:
    ds = pydicom.dcmread(svs_run / "report.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert str(ds.PatientID) == "PID-778899"
    pdf = bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
    assert pdf == (svs_run / "report.pdf").read_bytes()


def test_dicom_slide_fields_and_study(cli, dicom_with_patient: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _score(cli, dicom_with_patient, out, "--format", "pdf,json,dicom", "--accession", "OVERRIDE-1")
    assert result.exit_code == 0, result.output
    first = _pdf_pages(out / "report.pdf")[0]
    assert "Dicomperson, Beatrice" in first and "DCM-123456" in first and "1965-07-08" in first
    assert "OVERRIDE-1" in first and "DACC-9876" not in first  # options override the slide's attributes
    source = pydicom.dcmread(next(dicom_with_patient.iterdir()), stop_before_pixels=True)
    report = pydicom.dcmread(out / "report.dcm")
    assert report.StudyInstanceUID == source.StudyInstanceUID
    assert report.SeriesInstanceUID != source.SeriesInstanceUID
    assert report.SOPInstanceUID != source.SOPInstanceUID
    assert (
        bytes(report.EncapsulatedDocument)[: int(report.EncapsulatedDocumentLength)]
        == (out / "report.pdf").read_bytes()
    )
    result_json = json.loads((out / "result.json").read_text())
    validate_result(result_json)
    assert result_json["slide"]["format"] == "dicom"


def test_deidentify_leaves_no_identifier(cli, dicom_with_patient: Path, tmp_path: Path) -> None:
    out = tmp_path / "anon"
    result = _score(
        cli, dicom_with_patient, out, "--format", "pdf,json,dicom", "--deidentify", *KEY, *PATIENT
    )
    assert result.exit_code == 0, result.output
    identifiers = ["Testperson", "Alice", "PID-778899", "1970-02-03", "19700203", "ACC-55443"]
    identifiers += ["Dicomperson", "Beatrice", "DCM-123456", "19650708", "DACC-9876", "slide.dicom"]
    texts = {
        "pdf": "\n".join(_pdf_pages(out / "report.pdf")),
        "json": (out / "result.json").read_text(),
        "dcm": (out / "report.dcm").read_bytes().decode("latin-1"),
    }
    for name, text in texts.items():
        for identifier in identifiers:
            assert identifier not in text, f"{identifier} found in {name}"
    assert "ANON-" in texts["pdf"]


def test_two_runs_identical_modulo_timestamps(cli, svs_run: Path, cmu_svs: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    result = _score(cli, cmu_svs, out, "--format", "json", *PATIENT)
    assert result.exit_code == 0, result.output
    first = without_volatile(json.loads((svs_run / "result.json").read_text()))
    second = without_volatile(json.loads((out / "result.json").read_text()))
    second["slide"]["path"] = first["slide"]["path"] = "-"
    assert first == second


@pytest.mark.parametrize(
    "case",
    ["missing", "text_as_svs", "truncated_svs", "empty_folder", "ct_dicom", "malformed_dicom", "no_mpp"]
    + ["no_mpp_tiff"],
)
def test_bad_inputs_exit_2_and_write_nothing(
    cli, case: str, tmp_path: Path, cmu_svs: Path, request: pytest.FixtureRequest
) -> None:
    slide = tmp_path / "input"
    if case == "missing":
        slide = tmp_path / "nope.svs"
    elif case == "text_as_svs":
        slide = tmp_path / "notes.svs"
        slide.write_text("not a slide\n")
    elif case == "truncated_svs":
        slide = tmp_path / "cut.svs"
        slide.write_bytes(cmu_svs.read_bytes()[:50_000])
    elif case == "empty_folder":
        slide.mkdir()
    elif case == "ct_dicom":
        slide = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    elif case == "malformed_dicom":
        slide = request.getfixturevalue("malformed_dicom")
    elif case == "no_mpp":
        slide = request.getfixturevalue("tcga_svs")
    elif case == "no_mpp_tiff":
        slide = request.getfixturevalue("no_mpp_tiff")
    out = tmp_path / "out"
    result = _score(cli, slide, out, "--format", "pdf,json,dicom")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert slide.name in lines[0] or str(slide) in lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_bad_options_exit_2(cli, cmu_svs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for extra in (["--format", "pdf,xml"], ["--risk-model", str(tmp_path / "none.json")]):
        result = _score(cli, cmu_svs, out, *extra)
        assert result.exit_code == 2, result.output
        assert result.output.strip().startswith("error:")
        assert not out.exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--birth-date", "1970/02/03"],
        ["--birth-date", "1970-02-30"],
        ["--sex", "X"],
        ["--accession", "A" * 17],
    ],
)
def test_bad_patient_options_exit_2_before_any_work(
    cli, cmu_svs: Path, tmp_path: Path, extra: list[str]
) -> None:
    out = tmp_path / "out"
    result = _score(cli, cmu_svs, out, *extra)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error: --")
    assert extra[1] not in result.output  # the value itself (patient data) is not echoed
    assert not out.exists()


def test_output_path_that_is_a_file_or_unwritable_exit_2(cli, cmu_svs: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("keep me")
    result = _score(cli, cmu_svs, a_file)
    assert result.exit_code == 2 and "not a folder" in result.output
    assert a_file.read_text() == "keep me"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = _score(cli, cmu_svs, locked / "sub" / "out")
        if os.geteuid() != 0:  # root may write anywhere; the probe then succeeds
            assert result.exit_code == 2 and "writable" in result.output
        assert not (locked / "sub").exists() or result.exit_code == 0
    finally:
        locked.chmod(0o700)
    result = _score(cli, cmu_svs, Path("/proc/sequoia-out"))
    assert result.exit_code == 2 and "writable" in result.output


def test_corrupt_risk_model_exit_2(cli, cmu_svs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.json"
    bad.write_text('{"format": "something else"}')
    out = tmp_path / "out"
    result = _score(cli, cmu_svs, out, "--risk-model", str(bad))
    assert result.exit_code == 2, result.output
    assert "model.json" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_demo_as_a_real_process(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("sequoia-clinic")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "sequoia_clinic"]
    done = subprocess.run(
        [*command, "demo", "--out", str(tmp_path / "demo"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Demo report:" in done.stdout
    assert (tmp_path / "demo" / "report.pdf").exists()
    validate_result(json.loads((tmp_path / "demo" / "result.json").read_text()))
    shutil.rmtree(tmp_path / "demo")


def test_calibration_warning_follows_the_models_expression_source() -> None:
    import dataclasses

    from sequoia_clinic.pipeline.report_records import calibration_warning
    from sequoia_clinic.pipeline.score import DEFAULT_RISK_MODEL
    from sequoia_clinic.qc import QCCode
    from sequoia_clinic.survival.model import RiskModel
    from sequoia_clinic.survival.records import ExpressionSource

    model = RiskModel.load(DEFAULT_RISK_MODEL)
    assert model.expression_source is ExpressionSource.MEASURED
    warning = calibration_warning(model)
    assert warning.code is QCCode.RISK_MODEL_NOT_ON_PREDICTED
    assert "calibrated on measured expression" in warning.message
    predicted = dataclasses.replace(model, expression_source=ExpressionSource.PREDICTED)
    assert calibration_warning(predicted) is None
    unknown = dataclasses.replace(model, expression_source=ExpressionSource.UNKNOWN)
    assert "unstated" in calibration_warning(unknown).message


def test_dicom_report_references_the_level0_instance(cmu_dicom: Path) -> None:
    import pydicom

    from sequoia_clinic.slides.opening import open_slide

    with open_slide(cmu_dicom) as slide:
        meta = slide.info.metadata
    by_uid = {
        str(ds.SOPInstanceUID): ds
        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(cmu_dicom.glob("*.dcm")))
    }
    header = by_uid[str(meta.sop_instance_uid)]
    assert "VOLUME" in list(header.ImageType) and meta.sop_class_uid == header.SOPClassUID
    assert int(header.TotalPixelMatrixColumns) == 2220  # level 0 of the CMU conversion
