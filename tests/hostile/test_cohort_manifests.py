"""Hostile cohort manifests: every problem listed in ONE error line, exit code 2, nothing written.

Each manifest is checked completely before any work (no model is loaded, no folder created): missing
columns, slides that do not exist, duplicate slide ids, a folder holding no slide, non-numeric or negative
follow-up times, bad events, and all of them at once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


def write(tmp_path: Path, rows: dict[str, list[object]], name: str = "manifest.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run(cli, manifest: Path, out: Path, *extra: str):
    return cli(["cohort", "run", manifest, "--out", out, "--time-unit", "days", *extra])


def assert_refused(result, out: Path, *fragments: str) -> str:
    assert result.exit_code == 2, result.stdout + result.stderr
    line = result.stderr
    assert line.startswith("error: ") and line.count("\n") == 1, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not out.exists()
    assert result.stdout == ""
    return line


@pytest.fixture()
def empty_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "no-slides"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a slide\n")
    return folder


def test_missing_column(cli, tmp_path: Path, cmu_svs: Path) -> None:
    manifest = write(tmp_path, {"slide": [str(cmu_svs)], "patient": ["P1"]})
    assert_refused(
        run(cli, manifest, tmp_path / "out"), tmp_path / "out", "1 problem:", "missing column 'patient_id'"
    )


def test_nonexistent_paths(cli, tmp_path: Path, cmu_svs: Path) -> None:
    manifest = write(
        tmp_path, {"slide": [str(cmu_svs), "gone.svs", "/nowhere/x.svs"], "patient_id": ["A", "B", "C"]}
    )
    assert_refused(
        run(cli, manifest, tmp_path / "out"),
        tmp_path / "out",
        "2 problems:",
        "row 2: slide not found: gone.svs",
        "row 3: slide not found: /nowhere/x.svs",
    )


def test_duplicate_slide_ids(cli, tmp_path: Path, cmu_svs: Path) -> None:
    manifest = write(
        tmp_path,
        {"slide": [str(cmu_svs)] * 3, "patient_id": ["A", "B", "C"], "slide_id": ["s1", "s2", "s1"]},
    )
    assert_refused(
        run(cli, manifest, tmp_path / "out"),
        tmp_path / "out",
        "1 problem:",
        "duplicate slide_id 's1' (rows 1, 3)",
    )


def test_default_slide_ids_clash(cli, tmp_path: Path, cmu_svs: Path) -> None:
    other = tmp_path / "copy"
    other.mkdir()
    (other / cmu_svs.name).write_bytes(cmu_svs.read_bytes())
    manifest = write(tmp_path, {"slide": [str(cmu_svs), str(other / cmu_svs.name)], "patient_id": ["A", "B"]})
    assert_refused(
        run(cli, manifest, tmp_path / "out"),
        tmp_path / "out",
        f"duplicate slide_id '{cmu_svs.stem}' (rows 1, 2)",
    )


def test_folder_without_slides(cli, tmp_path: Path, empty_folder: Path) -> None:
    manifest = write(tmp_path, {"slide": [str(empty_folder)], "patient_id": ["A"]})
    assert_refused(run(cli, manifest, tmp_path / "out"), tmp_path / "out", "row 1: folder holds no slide")


def test_non_numeric_times_and_bad_events(cli, tmp_path: Path, cmu_svs: Path) -> None:
    manifest = write(
        tmp_path,
        {
            "slide": [str(cmu_svs)] * 4,
            "patient_id": list("ABCD"),
            "slide_id": list("abcd"),
            "time": ["1200", "ten years", "-5", "800"],
            "event": ["1", "0", "1", "maybe"],
        },
    )
    assert_refused(
        run(cli, manifest, tmp_path / "out"),
        tmp_path / "out",
        "3 problems:",
        "row 2: time is not a number",
        "row 3: negative time",
        "row 4: event is not 0/1 or true/false",
    )


def test_outcomes_need_a_time_unit(cli, tmp_path: Path, cmu_svs: Path) -> None:
    manifest = write(tmp_path, {"slide": [str(cmu_svs)], "patient_id": ["A"], "time": [900], "event": [1]})
    result = cli(["cohort", "run", manifest, "--out", tmp_path / "out"])
    assert_refused(result, tmp_path / "out", "pass --time-unit days, months or years")


def test_every_problem_in_one_line(cli, tmp_path: Path, cmu_svs: Path, empty_folder: Path) -> None:
    manifest = write(
        tmp_path,
        {
            "slide": [str(cmu_svs), "missing.svs", str(empty_folder), str(cmu_svs)],
            "patient_id": ["PAT-A", "PAT-B", "", "PAT-D"],
            "slide_id": ["x", "y", "z", "x"],
            "time": ["100", "abc", "300", "400"],
            "event": ["0", "1", "1", "0"],
        },
        name="hostile.csv",
    )
    line = assert_refused(
        run(cli, manifest, tmp_path / "out"),
        tmp_path / "out",
        f"{manifest}: 5 problems:",
        "row 2: slide not found: missing.svs",
        "row 2: time is not a number",
        "row 3: folder holds no slide",
        "row 3: empty patient_id",
        "duplicate slide_id 'x' (rows 1, 4)",
        "nothing was started",
    )
    assert "PAT-" not in line  # no patient IDs echoed


def test_parquet_manifest_and_unreadable_file(cli, tmp_path: Path, cmu_svs: Path) -> None:
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"slide": ["nope.svs"], "patient_id": [7]}).to_parquet(manifest)
    assert_refused(run(cli, manifest, tmp_path / "out"), tmp_path / "out", "row 1: slide not found: nope.svs")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"\x00\x01 not parquet")
    assert_refused(run(cli, garbage, tmp_path / "out"), tmp_path / "out", "cannot read the manifest")
    empty = write(tmp_path, {"slide": [], "patient_id": []}, name="empty.csv")
    assert_refused(run(cli, empty, tmp_path / "out"), tmp_path / "out", "the manifest has no rows")
