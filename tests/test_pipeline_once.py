"""Work is done once per slide in a score run: one opening, one header parse per DICOM file, one hash."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pydicom
import pytest

import sequoia_clinic.fileio as fileio
import sequoia_clinic.slides.opening as opening
from sequoia_clinic.locations import weights_cache_dir
from sequoia_clinic.pipeline import predict as predict_flow
from sequoia_clinic.pipeline.score import ScoreRequest, score_slide
from sequoia_clinic.report.files import OutputFormat
from sequoia_clinic.settings import ModelSettings, Settings


def _score_counting(
    slide: Path, out: Path, monkeypatch: pytest.MonkeyPatch, user_cache: Path
) -> Counter[str]:
    counts: Counter[str] = Counter()
    real_open, real_read, real_hash = predict_flow.open_slide, pydicom.dcmread, fileio.sha256_file

    def counted_open(*args, **kwargs):
        counts["open"] += 1
        return real_open(*args, **kwargs)

    def counted_read(path, *args, **kwargs):
        counts[f"dcmread:{Path(path).name}"] += 1
        return real_read(path, *args, **kwargs)

    def counted_hash(path, *args, **kwargs):
        counts[f"hash:{Path(path).name}"] += 1
        return real_hash(path, *args, **kwargs)

    monkeypatch.setattr(predict_flow, "open_slide", counted_open)
    monkeypatch.setattr(pydicom, "dcmread", counted_read)
    monkeypatch.setattr(opening, "sha256_file", counted_hash)
    request = ScoreRequest(slide=slide, out_dir=out, formats=tuple(OutputFormat))
    score_slide(request, Settings(models=ModelSettings(weights_cache_dir=weights_cache_dir(user_cache))))
    return counts


def test_a_score_run_opens_and_hashes_the_slide_once(cmu_svs, tmp_path, monkeypatch, user_cache) -> None:
    counts = _score_counting(cmu_svs, tmp_path / "out", monkeypatch, user_cache)
    assert counts["open"] == 1
    assert counts[f"hash:{cmu_svs.name}"] == 1
    assert (tmp_path / "out" / "report.pdf").is_file()


def test_a_dicom_score_run_parses_each_header_once(cmu_dicom, tmp_path, monkeypatch, user_cache) -> None:
    files = sorted(p.name for p in cmu_dicom.glob("*.dcm"))
    counts = _score_counting(cmu_dicom, tmp_path / "out", monkeypatch, user_cache)
    assert counts["open"] == 1
    # the reader parses each instance's header once; the DICOM report only writes (and never re-reads) it
    assert {name: counts[f"dcmread:{name}"] for name in files} == dict.fromkeys(files, 1)
    assert all(counts[f"hash:{name}"] == 1 for name in files)
    report = pydicom.dcmread(tmp_path / "out" / "report.dcm")  # not counted: after the run
    assert report.StudyInstanceUID == pydicom.dcmread(cmu_dicom / files[0]).StudyInstanceUID


def test_timings_are_a_tree_whose_total_is_the_wall_of_the_run(cmu_svs, tmp_path, user_cache) -> None:
    import json
    import time

    settings = Settings(models=ModelSettings(weights_cache_dir=weights_cache_dir(user_cache)))
    request = ScoreRequest(slide=cmu_svs, out_dir=tmp_path / "out", formats=(OutputFormat.JSON,))
    score_slide(request, settings)  # warm: generated weights, imports
    request = ScoreRequest(slide=cmu_svs, out_dir=tmp_path / "again", formats=tuple(OutputFormat))
    start = time.perf_counter()
    outcome = score_slide(request, settings)
    wall = time.perf_counter() - start
    timings = json.loads((tmp_path / "again" / "result.json").read_text())["timings"]
    assert abs(timings["total"] - wall) <= 0.05 * wall
    top = {k: v for k, v in timings.items() if "." not in k and k != "total"}
    assert {"load_models", "inference", "risk", "spatial_maps", "report", "render_pdf"} <= set(top)
    assert sum(top.values()) <= timings["total"] + 0.01  # parents are never summed with their children
    # each part lies within its parent (tile selection runs alongside encoding, so parts may overlap)
    parts = [v for k, v in timings.items() if k.startswith("inference.")]
    assert parts and max(parts) <= timings["inference"] + 0.01
    assert outcome.report.total_seconds == sum(outcome.report.stage_seconds.values())  # the PDF's own view
