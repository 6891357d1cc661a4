"""Slide-reading QC notes everywhere, and a refused slide before any stage line.

* ``inspect`` shows the notes ``score`` gives about a slide's pixels (a converted pixel format, damaged
  stored tiles), as ``QC warning:`` lines and as ``qc_warnings`` in its JSON, with the same codes and
  messages;
* a warm feature cache repeats the notes of the cold run (an entry keeps them; one whose notes are missing or
  malformed is refused, never read as "no notes");
* ``score``, ``predict`` and ``inspect`` refuse a bad slide (empty file, folder without DICOM, text renamed
  ``.svs``) with exactly one ``error:`` line on a piped stderr: no ``stage:`` line before it, nothing left.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hostile_corpus import RESOLUTION, corrupt_tiles, tissue_pixels
from test_hostile_cli import _check_one_line, _run_process, _snapshot

from sequoia_clinic.features.cache import FeatureCache, notes_from_meta, notes_to_meta
from sequoia_clinic.pipeline import predict as predict_flow
from sequoia_clinic.qc import QCCode, QCWarning
from sequoia_clinic.settings import Settings

# the adequacy gate is off: the 1024 px test slide is far below the clinical minimums
SCORE_OPTIONS = ["--format", "json", "--repeats", "0", "--min-tissue-mm2", "0", "--min-tiles", "0"]


def _one_corrupt_tile(folder: Path) -> Path:
    """A 4 x 4 tile JPEG TIFF of tissue whose stored tile 5 (column 1, row 1) cannot be decoded."""
    return corrupt_tiles(folder / "one-corrupt.tif", (5,))


def _qc(out: Path) -> tuple[list[str], list[str]]:
    qc = json.loads((out / "result.json").read_text())["qc"]
    return qc["codes"], qc["warnings"]


def _inspect_json(cli, slide: Path) -> dict:
    result = cli(["inspect", str(slide), "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# ---- (d) a warm cache repeats the cold run's notes ---------------------------------------------------------
def test_a_warm_cache_repeats_the_corrupt_tile_note(cli, tmp_path, user_cache, monkeypatch):
    slide = _one_corrupt_tile(tmp_path)
    cache = tmp_path / "cache"
    base = ["score", str(slide), "--cache-dir", str(cache), *SCORE_OPTIONS]
    cold = cli([*base, "--out", str(tmp_path / "cold")])
    assert cold.exit_code == 0, cold.stderr
    assert len(list((cache / "features").glob("*/*.npz"))) == 1

    def no_encoding(*args, **kwargs):
        raise AssertionError("the warm run encoded tiles: it was not a cache hit")

    monkeypatch.setattr(predict_flow, "_encode", no_encoding)
    warm = cli([*base, "--out", str(tmp_path / "warm")])
    assert warm.exit_code == 0, warm.stderr
    cold_codes, cold_messages = _qc(tmp_path / "cold")
    assert _qc(tmp_path / "warm") == (cold_codes, cold_messages)
    corrupt = [m for c, m in zip(cold_codes, cold_messages, strict=True) if c == "corrupt-tiles"]
    assert len(corrupt) == 1 and corrupt[0].startswith("1 stored tile(s) of the slide could not be decoded; ")
    assert "cache-entry-rejected" not in cold_codes
    # the same note, word for word, is what inspect reports for the slide
    notes = _inspect_json(cli, slide)["qc_warnings"]
    assert notes == [{"code": "corrupt-tiles", "message": corrupt[0]}]


def _entry(cache: Path) -> Path:
    (path,) = (cache / "features").glob("*/*.npz")
    return path


def _rewrite_meta(path: Path, change) -> None:
    """Rewrite an entry's index (the arrays, and so their checksum, stay as they are)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name != "__meta__"}
        meta = json.loads(str(data["__meta__"]))
    change(meta)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays, __meta__=np.array(json.dumps(meta)))


@pytest.mark.parametrize(
    "change",
    [
        lambda meta: meta.pop("slide_notes"),  # an entry without notes is not read as "no notes"
        lambda meta: meta.__setitem__("slide_notes", [["no-such-code", "text"]]),
        lambda meta: meta.__setitem__("slide_notes", "corrupt-tiles"),
        lambda meta: meta.__setitem__("slide_notes", [["corrupt-tiles", "x" * 5000]]),
    ],
    ids=["missing", "unknown-code", "not-a-list", "too-long"],
)
def test_an_entry_without_valid_notes_is_recomputed(tmp_path, demo_bundle, change):
    slide = _one_corrupt_tile(tmp_path)
    settings = Settings(cache_dir=tmp_path / "cache")
    folds = predict_flow.load_folds(demo_bundle, settings)
    cold = predict_flow.run_prediction(predict_flow.PredictRequest(slide), demo_bundle, folds, settings)
    _rewrite_meta(_entry(tmp_path / "cache"), change)
    again = predict_flow.run_prediction(predict_flow.PredictRequest(slide), demo_bundle, folds, settings)
    assert not again.cache_hit
    rejected = [w for w in again.qc_warnings if w.code == QCCode.CACHE_ENTRY_REJECTED]
    assert len(rejected) == 1 and "does not fit this version's layout" in rejected[0].message
    assert [w for w in again.qc_warnings if w not in rejected] == list(cold.qc_warnings)
    hit = predict_flow.run_prediction(predict_flow.PredictRequest(slide), demo_bundle, folds, settings)
    assert hit.cache_hit and hit.qc_warnings == cold.qc_warnings  # the rewritten entry is whole again


def test_stored_notes_round_trip_and_are_checked():
    notes = (
        QCWarning(QCCode.PIXELS_CONVERTED, "slide pixels converted: 16-bit samples scaled to 8 bit"),
        QCWarning(QCCode.CORRUPT_TILES, "2 stored tile(s) of the slide could not be decoded; 1 tile(s) ..."),
    )
    stored = json.loads(json.dumps(notes_to_meta(notes)))  # as the index holds them
    assert stored == [[n.code.value, n.message] for n in notes]
    assert notes_from_meta(stored) == notes and notes_from_meta([]) == ()
    for bad in (None, {}, [["corrupt-tiles"]], [[1, "x"]], [["nope", "x"]], [["corrupt-tiles", "x"]] * 33):
        with pytest.raises(ValueError):
            notes_from_meta(bad)


def test_the_cache_format_names_the_notes(tmp_path):
    # entries of the previous format (no notes) live under other keys: never looked up, a plain miss
    from sequoia_clinic.features import cache as cache_module

    material = {"slide_sha256": "0" * 64}
    key = cache_module.cache_key(material)
    old_format = cache_module.CACHE_FORMAT
    cache_module.CACHE_FORMAT = "sequoia-clinic-features/2"
    try:
        old_key = cache_module.cache_key(material)
    finally:
        cache_module.CACHE_FORMAT = old_format
    assert old_format == "sequoia-clinic-features/3" and old_key != key
    assert FeatureCache(tmp_path).load(key, "w").entry is None


# ---- (c) inspect shows the slide-reading notes ------------------------------------------------------------
def test_inspect_shows_a_pixel_conversion_like_score(cli, tmp_path):
    pixels = tissue_pixels(1024).astype(np.uint16) * 257  # 16-bit, exactly 8-bit values x 257
    slide = tmp_path / "rgb16.tif"
    tifffile.imwrite(slide, pixels, tile=(256, 256), photometric="rgb", **RESOLUTION)
    message = "slide pixels converted: 16-bit samples scaled to 8 bit"
    report = _inspect_json(cli, slide)
    assert report["qc_warnings"] == [{"code": "pixels-converted", "message": message}]
    text = cli(["inspect", str(slide)])
    assert text.exit_code == 0 and text.stdout.splitlines()[-1] == f"QC warning: {message}"
    # the 8-bit slide with the same values reads the same tissue, with no note
    plain = tmp_path / "rgb8.tif"
    tifffile.imwrite(plain, tissue_pixels(1024), tile=(256, 256), photometric="rgb", **RESOLUTION)
    eight = _inspect_json(cli, plain)
    assert eight["qc_warnings"] == [] and eight["tissue_fraction"] == report["tissue_fraction"]
    assert eight["tiles"] == report["tiles"]


def test_inspect_shows_the_corrupt_tile_note(cli, tmp_path):
    slide = _one_corrupt_tile(tmp_path)
    report = _inspect_json(cli, slide)
    (note,) = report["qc_warnings"]
    assert note["code"] == "corrupt-tiles"
    # 256 px grid tiles on 256 px stored tiles: the damaged stored tile (read as white) lies under exactly one
    # grid tile, which holds no tissue and is not kept; the 15 others are kept and none lies over the damage
    tiles = report["tiles"]
    assert (tiles["read_level"], tiles["read_px"], tiles["tile_size_level0"]) == (0, 256, 256)
    assert (tiles["total"], tiles["candidates"], tiles["kept"]) == (16, 16, 15)
    assert note["message"] == (
        "1 stored tile(s) of the slide could not be decoded; 0 tile(s) over them were left out"
    )
    text = cli(["inspect", str(slide)])
    assert text.exit_code == 0 and f"QC warning: {note['message']}" in text.stdout.splitlines()


def test_a_clean_slide_has_no_inspect_notes(cli, cmu_svs):
    report = _inspect_json(cli, cmu_svs)
    assert report["qc_warnings"] == []
    assert "QC warning" not in cli(["inspect", str(cmu_svs)]).stdout


# ---- (f) a bad slide is refused before any stage line ------------------------------------------------------
def _empty(folder: Path) -> Path:
    path = folder / "empty.svs"
    path.write_bytes(b"")
    return path


def _folder_without_dicom(folder: Path) -> Path:
    path = folder / "scan"
    path.mkdir()
    (path / "notes.txt").write_text("not a slide\n")
    return path


def _text_as_svs(folder: Path) -> Path:
    path = folder / "report.svs"
    path.write_text("Patient report\nnot a slide at all\n" * 20)
    return path


BAD_SLIDES = {
    "empty-file": _empty,
    "folder-without-dicom": _folder_without_dicom,
    "text-as-svs": _text_as_svs,
}


@pytest.mark.parametrize("command", ["score", "predict", "inspect"])
@pytest.mark.parametrize("make", list(BAD_SLIDES.values()), ids=list(BAD_SLIDES))
def test_a_bad_slide_is_one_line_before_any_stage(command, make, tmp_path, user_cache):
    work = tmp_path / "work"
    work.mkdir()
    slide = make(work)
    before = _snapshot(work)
    code, stdout, stderr, _ = _run_process([command, str(slide)], work)  # stderr is a pipe, not a TTY
    assert code == 2, stderr
    line = _check_one_line(stdout, stderr)
    assert slide.name in line and "stage:" not in stderr
    assert _snapshot(work) == before  # no report folder, no expression.csv, no temporary file
