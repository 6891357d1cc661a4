"""``sequoia-clinic stratify``: log-rank, hazard ratios and C-index checked against lifelines directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test
from lifelines.utils import concordance_index

from sequoia_clinic.signatures.registry import get_signature
from sequoia_clinic.survival.model import RiskModel

MODEL = Path(__file__).resolve().parents[1] / "models" / "risk" / "gse7390-wang76.json"


@pytest.fixture(scope="module")
def cohort(gse7390_table: pd.DataFrame) -> pd.DataFrame:
    return gse7390_table[list(get_signature("wang76").genes)].assign(
        years=gse7390_table["time_days"] / 365.25,
        event=gse7390_table["dmfs_event"],
        grade=gse7390_table["grade"],
        size=gse7390_table["size"],
    )


@pytest.fixture(scope="module")
def cohort_csv(cohort: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("strat") / "cohort.csv"
    cohort.to_csv(path, index=False)
    return path


@pytest.mark.filterwarnings("ignore::lifelines.exceptions.ConvergenceWarning")
def test_group_column_matches_lifelines(cli, cohort: pd.DataFrame, cohort_csv: Path, tmp_path: Path) -> None:
    order = "well differentiated,intermediate,poorly differentiated,unkown"
    result = cli(
        [
            "stratify",
            str(cohort_csv),
            "--group-col",
            "grade",
            "--group-order",
            order,
            "--time-col",
            "years",
            "--event-col",
            "event",
            "--out",
            str(tmp_path / "s"),
            "--endpoint",
            "distant metastasis",
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s" / "stratify.json").read_text())
    reference = multivariate_logrank_test(cohort["years"], cohort["grade"], cohort["event"])
    assert summary["logrank"]["p_value"] == pytest.approx(reference.p_value, rel=1e-9)
    assert summary["logrank"]["degrees_of_freedom"] == 3
    frame = pd.DataFrame(
        {
            "poor": (cohort["grade"] == "poorly differentiated").astype(float),
            "inter": (cohort["grade"] == "intermediate").astype(float),
            "unk": (cohort["grade"] == "unkown").astype(float),
            "T": cohort["years"],
            "E": cohort["event"],
        }
    )
    cph = CoxPHFitter().fit(frame, "T", "E")
    hrs = {row["group"]: row for row in summary["hazard_ratios_vs_lowest"]}
    assert {row["reference"] for row in hrs.values()} == {"well differentiated"}
    assert hrs["poorly differentiated"]["hazard_ratio"] == pytest.approx(
        np.exp(cph.params_["poor"]), rel=1e-6
    )
    assert hrs["intermediate"]["lower"] == pytest.approx(
        cph.summary.loc["inter", "exp(coef) lower 95%"], rel=1e-6
    )
    pair = next(
        p
        for p in summary["pairwise_logrank"]
        if {p["group_a"], p["group_b"]} == {"intermediate", "poorly differentiated"}
    )
    mask_a, mask_b = cohort["grade"] == "intermediate", cohort["grade"] == "poorly differentiated"
    direct = logrank_test(
        cohort["years"][mask_a], cohort["years"][mask_b], cohort["event"][mask_a], cohort["event"][mask_b]
    )
    assert pair["p_value"] == pytest.approx(direct.p_value, rel=1e-9)
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == [
        "at_risk.csv",
        "km.pdf",
        "km.png",
        "km_curves.csv",
        "stratify.json",
        "stratify_figures.csv",
    ]
    assert (tmp_path / "s" / "km.pdf").read_bytes().startswith(b"%PDF")
    assert hrs["unkown"]["hazard_ratio"] is None and hrs["unkown"]["note"] == (
        "not estimable: group 'unkown' has no events"
    )
    assert (
        "hazard ratio of 'unkown' vs 'well differentiated' not estimable: group 'unkown' has no events"
        in (summary["notes"])
    )
    curves = pd.read_csv(tmp_path / "s" / "km_curves.csv")
    for _, group in curves.groupby("group"):
        assert np.all(np.diff(group["survival"]) <= 0)
        assert np.all(group["lower"] <= group["survival"] + 1e-12) and np.all(
            group["survival"] <= group["upper"] + 1e-12
        )
    figures = pd.read_csv(tmp_path / "s" / "stratify_figures.csv")
    assert {"cohort", "group", "logrank", "pairwise_logrank", "hazard_ratio", "c_index"} <= set(
        figures["section"]
    )


def test_risk_column_tertiles_and_c_index(
    cli, cohort: pd.DataFrame, cohort_csv: Path, tmp_path: Path
) -> None:
    result = cli(
        [
            "stratify",
            str(cohort_csv),
            "--risk-col",
            "size",
            "--time-col",
            "years",
            "--event-col",
            "event",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s" / "stratify.json").read_text())
    assert summary["c_index"]["harrell_c"] == pytest.approx(
        concordance_index(cohort["years"], -cohort["size"], cohort["event"])
    )
    cut = np.quantile(cohort["size"], [1 / 3, 2 / 3])
    groups = np.array(["low", "intermediate", "high"])[np.searchsorted(cut, cohort["size"], side="right")]
    assert summary["logrank"]["p_value"] == pytest.approx(
        multivariate_logrank_test(cohort["years"], groups, cohort["event"]).p_value
    )
    assert [c["n"] for c in summary["curves"]] == [
        int((groups == g).sum()) for g in ("low", "intermediate", "high")
    ]
    assert "exploratory" in " ".join(summary["notes"])


def test_model_groups_match_apply(cli, cohort: pd.DataFrame, cohort_csv: Path, tmp_path: Path) -> None:
    days = cohort.assign(days=cohort["years"] * 365.25).drop(columns=["years"])
    path = tmp_path / "days.parquet"
    days.to_parquet(path)
    result = cli(
        [
            "stratify",
            str(path),
            "--model",
            str(MODEL),
            "--time-col",
            "days",
            "--time-unit",
            "days",
            "--event-col",
            "event",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s" / "stratify.json").read_text())
    model = RiskModel.load(MODEL)
    applied = [model.apply(row).group for row in cohort[list(model.genes)].to_dict("records")]
    assert [c["n"] for c in summary["curves"]] == [applied.count(g) for g in model.group_names]
    assert "apparent" in " ".join(summary["notes"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--risk-col", "size", "--group-col", "grade"], "cannot be combined"),
        (["--risk-col", "sise"], "did you mean 'size'"),
        (["--group-col", "grade", "--group-order", "low,high"], "--group-order: lacks 4 of the 4 group(s)"),
        (["--model", str(MODEL), "--groups", "median"], "frozen cut-offs"),
        (["--risk-col", "size", "--time-unit", "days"], "time unit mismatch"),
        ([], "no grouping"),
    ],
)
def test_stratify_errors(cli, extra: list[str], message: str, cohort_csv: Path, tmp_path: Path) -> None:
    result = cli(
        [
            "stratify",
            str(cohort_csv),
            "--time-col",
            "years",
            "--event-col",
            "event",
            "--out",
            str(tmp_path / "s"),
            *extra,
        ]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "s").exists()


def _stratify(cli, table: Path, out: Path, *extra: str):
    return cli(
        ["stratify", str(table), "--time-col", "years", "--event-col", "event", "--out", str(out), *extra]
    )


def test_reference_group_without_events(cli, cohort: pd.DataFrame, tmp_path: Path) -> None:
    table = tmp_path / "few.csv"
    few = cohort.assign(event=0)
    few.loc[few["size"] > few["size"].median(), "event"] = cohort["event"]  # no events in the low half
    few.to_csv(table, index=False)
    result = _stratify(
        cli, table, tmp_path / "s", "--risk-col", "size", "--cutoffs", str(few["size"].median())
    )
    assert result.exit_code == 0, result.output
    assert "HR high vs low: not estimable: reference group 'low' has no events" in result.output
    summary = json.loads((tmp_path / "s" / "stratify.json").read_text())
    (hr,) = summary["hazard_ratios_vs_lowest"]
    assert hr["hazard_ratio"] is None and hr["lower"] is None and hr["upper"] is None
    assert summary["curves"][0]["events"] == 0
    assert not any("quantile" in note for note in summary["notes"])  # the cut-off was given by the user
    figures = pd.read_csv(tmp_path / "s" / "stratify_figures.csv")
    assert figures.loc[figures["section"] == "hazard_ratio", "value"].isna().all()


def test_identifier_column_is_refused_without_echoing_it(cli, cohort: pd.DataFrame, tmp_path: Path) -> None:
    table = tmp_path / "ids.csv"
    cohort.assign(patient_id=[f"PAT-{i:04d}-SMITH" for i in range(len(cohort))]).to_csv(table, index=False)
    result = _stratify(cli, table, tmp_path / "s", "--group-col", "patient_id")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "group column 'patient_id' has 198 distinct values (at most 20)" in line
    assert "SMITH" not in line and not (tmp_path / "s").exists()
    result = _stratify(cli, table, tmp_path / "s", "--group-col", "grade", "--group-order", "intermediate")
    (line,) = result.stderr.strip().splitlines()
    assert "lacks 3 of the 4 group(s)" in line and "differentiated" not in line


def test_model_risk_column_must_be_the_linear_predictor(cli, cohort: pd.DataFrame, tmp_path: Path) -> None:
    model = RiskModel.load(MODEL)
    rows = cohort[list(model.genes)].to_dict("records")
    applied = [model.apply(row) for row in rows]
    table = tmp_path / "scored.csv"
    cohort.assign(lp=[r.linear_predictor for r in applied], score=[r.score for r in applied]).to_csv(
        table, index=False
    )
    result = _stratify(cli, table, tmp_path / "s", "--model", str(MODEL), "--risk-col", "score")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "risk column 'score' looks like the 0-100 score, not the model's linear predictor" in line
    result = _stratify(cli, table, tmp_path / "s", "--model", str(MODEL), "--risk-col", "lp")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s" / "stratify.json").read_text())
    groups = [r.group for r in applied]
    assert [c["n"] for c in summary["curves"]] == [groups.count(g) for g in model.group_names]
