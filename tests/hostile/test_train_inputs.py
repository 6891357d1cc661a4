"""Hostile inputs to `train` and `evaluate`: one `error:` line naming the file and the fix, exit code 2, and
nothing written (the output folder is not created).

Cases: an expression table without the manifest's patients, NaN expression, a splits file leaving a fold
without test patients, an unreadable (corrupt) and a mis-shaped reference feature file, a manifest with
missing files, an occupied output folder, `--resume` without checkpoints, negative values under log2p1,
bad `--config`, and predictions sharing no gene with the measured table.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from synthetic_cohort import make_cohort, write_cohort

SMALL = '{"depth": 1, "nheads": 2, "dimensions_f": 8, "dimensions_s": 8, "dimensions_c": 8}'


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory: pytest.TempPathFactory):
    cohort = make_cohort(n_patients=30, genes_per_level=2, seed=2)
    folder = tmp_path_factory.mktemp("hostile-train")
    manifest, expression = write_cohort(cohort, folder)
    return cohort, folder, manifest, expression


def train(cli, manifest: Path, expression: Path, out: Path, *extra: str | Path):
    args = ["train", manifest, "--expression", expression, "--out", out, "--expression-transform", "none"]
    return cli([*args, "--config", SMALL, "--max-epochs", "1", "--folds", "3", "-q", *extra])


def assert_refused(result, out: Path | None, *fragments: str) -> None:
    assert result.exit_code == 2, result.stdout + result.stderr
    line = result.stderr
    assert line.startswith("error: ") and line.count("\n") == 1, line
    for fragment in fragments:
        assert fragment in line, line
    if out is not None:
        assert not out.exists(), f"{out} was written"


def test_expression_without_the_manifests_patients(cli, cohort_files, tmp_path):
    cohort, _, manifest, _ = cohort_files
    other = cohort.expression.assign(patient_id=[f"X{i}" for i in range(len(cohort.expression))])
    path = tmp_path / "other.csv"
    other.to_csv(path, index=False)
    assert_refused(
        train(cli, manifest, path, tmp_path / "out"), tmp_path / "out", "other.csv", "none of the manifest"
    )
    some = cohort.expression.iloc[5:]
    some.to_csv(path, index=False)
    assert_refused(
        train(cli, manifest, path, tmp_path / "out"), tmp_path / "out", "lacks 5 of the manifest's patients"
    )


def test_nan_expression(cli, cohort_files, tmp_path):
    cohort, _, manifest, _ = cohort_files
    frame = cohort.expression.copy()
    frame.iloc[3, 4] = np.nan
    path = tmp_path / "nan.csv"
    frame.to_csv(path, index=False)
    assert_refused(
        train(cli, manifest, path, tmp_path / "out"), tmp_path / "out", "nan.csv", "NaN", "Fill or remove"
    )


def test_negative_values_under_log2p1(cli, cohort_files, tmp_path):
    cohort, _, manifest, _ = cohort_files
    frame = cohort.expression.copy()
    frame.iloc[0, 1] = -2.0
    path = tmp_path / "neg.csv"
    frame.to_csv(path, index=False)
    args = [
        "train",
        manifest,
        "--expression",
        path,
        "--out",
        tmp_path / "out",
        "--expression-transform",
        "log2p1",
    ]
    assert_refused(cli(args), tmp_path / "out", "negative values", "--expression-transform none")


def test_a_fold_with_no_test_patients(cli, cohort_files, tmp_path):
    cohort, _, manifest, expression = cohort_files
    patients = sorted(set(cohort.patients))
    splits = {
        "fold_0": {"train": patients[:20], "val": patients[20:25], "test": patients[25:]},
        "fold_1": {"train": patients[:20], "val": patients[20:25], "test": ["NOT-IN-THE-MANIFEST"]},
    }
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(splits))
    result = train(cli, manifest, expression, tmp_path / "out", "--splits", path)
    assert_refused(result, tmp_path / "out", "splits.json", "fold 1 has no test patients")


def test_unreadable_and_misshaped_feature_files(cli, cohort_files, tmp_path):
    cohort, folder, manifest, expression = cohort_files
    frame = pd.read_csv(manifest)
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    frame.loc[2, "slide"] = str(corrupt)
    bad_manifest = folder / "manifest-unreadable.csv"
    frame.to_csv(bad_manifest, index=False)
    result = train(cli, bad_manifest, expression, tmp_path / "out")
    assert_refused(result, tmp_path / "out", "corrupt.h5", "cannot read the feature file")

    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as handle:
        handle["cluster_features"] = np.zeros((100, 32), dtype=np.float32)
    frame.loc[2, "slide"] = str(wrong)
    frame.to_csv(bad_manifest, index=False)
    assert_refused(
        train(cli, bad_manifest, expression, tmp_path / "out"), tmp_path / "out", "wrong.h5", "(100, 64)"
    )


def test_manifest_problems_are_listed_together(cli, cohort_files, tmp_path):
    _, folder, manifest, expression = cohort_files
    frame = pd.read_csv(manifest)
    frame.loc[0, "slide"] = "features/missing.h5"
    frame.loc[1, "patient_id"] = None
    frame.loc[3, "slide"] = frame.loc[4, "slide"]
    path = folder / "manifest-problems.csv"
    frame.to_csv(path, index=False)
    result = train(cli, path, expression, tmp_path / "out")
    assert_refused(
        result, tmp_path / "out", "3 problem(s)", "row 1", "row 2: empty patient_id", "duplicate slide_id"
    )


def test_output_folder_resume_and_config(cli, cohort_files, tmp_path):
    _, _, manifest, expression = cohort_files
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something.txt").write_text("keep me")
    assert_refused(train(cli, manifest, expression, occupied), None, "not empty", "--resume")
    assert (occupied / "something.txt").read_text() == "keep me"
    assert_refused(
        train(cli, manifest, expression, tmp_path / "out", "--resume"),
        tmp_path / "out",
        "no training checkpoints",
    )
    args = [
        "train",
        manifest,
        "--expression",
        expression,
        "--out",
        tmp_path / "out",
        "--expression-transform",
        "none",
    ]
    assert_refused(cli([*args, "--config", "{not json"]), tmp_path / "out", "--config", "not valid JSON")
    assert_refused(cli([*args, "--config", '{"input_dim": 3}']), tmp_path / "out", "cannot set input_dim")
    assert_refused(cli([*args, "--config", '{"depth": 0}']), tmp_path / "out", "depth")


def test_evaluate_predictions_sharing_no_gene(cli, cohort_files, tmp_path):
    cohort, _, _, expression = cohort_files
    predictions = pd.DataFrame({"patient_id": sorted(set(cohort.patients))})
    predictions["NOT_A_GENE"] = np.arange(len(predictions), dtype=float)
    path = tmp_path / "predictions.csv"
    predictions.to_csv(path, index=False)
    out = tmp_path / "eval"
    args = ["evaluate", "--predictions", path, "--expression", expression, "--out", out]
    assert_refused(cli([*args, "--expression-transform", "none"]), out, "share no gene")
    assert_refused(cli(args), out, "--expression-transform")
    predictions["NOT_A_GENE"] = np.nan
    predictions.to_csv(path, index=False)
    assert_refused(cli([*args, "--expression-transform", "none"]), out, "predictions.csv", "NaN")
