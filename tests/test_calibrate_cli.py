"""``sequoia-clinic calibrate``: outputs on a real cohort, and one-line exit-2 errors that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sequoia_clinic.signatures.registry import get_signature
from sequoia_clinic.survival.model import RiskModel

FAST = ["--cv-repeats", "1", "--bootstrap", "10"]


@pytest.fixture(scope="module")
def cohort_csv(gse7390_table: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    columns = [*get_signature("wang76").genes, "time_days", "dmfs_event", "age", "grade"]
    path = tmp_path_factory.mktemp("cohort") / "gse7390.csv"
    gse7390_table[columns].to_csv(path, index=False)
    return path


def base_args(table: Path, out: Path) -> list[str]:
    return [
        "calibrate",
        str(table),
        "--signature",
        "wang76",
        "--time-col",
        "time_days",
        "--event-col",
        "dmfs_event",
        "--time-unit",
        "days",
        "--out",
        str(out),
        *FAST,
    ]


def test_calibrate_writes_model_and_card(cli, cohort_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "risk.json"
    result = cli(base_args(cohort_csv, out) + ["--endpoint", "distant metastasis"])
    assert result.exit_code == 0, result.output
    assert "cross-validated harrell_c" in result.output
    model = RiskModel.load(out)
    assert model.training.n == 198 and model.endpoint == "distant metastasis"
    for suffix in ("png", "pdf", "md"):
        assert (tmp_path / "models" / f"risk.card.{suffix}").stat().st_size > 1000
    assert (tmp_path / "models" / "risk.card.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "models" / "risk.card.png").read_bytes().startswith(b"\x89PNG")
    assert "Harrell's C" in (tmp_path / "models" / "risk.card.md").read_text()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "risk.card.md",
        "risk.card.pdf",
        "risk.card.png",
        "risk.json",
    ]


def test_user_signature_file_and_cutoffs(cli, cohort_csv: Path, tmp_path: Path) -> None:
    signature = tmp_path / "sig.csv"
    signature.write_text("gene\nGOLPH2\nPLK1\nCBX3\nFEN1\nNOT_A_GENE\n")
    out = tmp_path / "m.json"
    args = base_args(cohort_csv, out)
    args[args.index("wang76")] = str(signature)
    result = cli(
        args + ["--cutoffs", "40,80", "--cutoff-scale", "score", "--group-names", "A,B,C", "--no-card"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["genes"] == ["GOLM1", "PLK1", "CBX3", "FEN1"] and data["signature"]["unmapped"] == [
        "NOT_A_GENE"
    ]
    lp = np.array(data["score_scale"]["training_lp_sorted"])
    assert data["groups"]["cutoffs_lp"] == pytest.approx(list(np.percentile(lp, [40, 80])))
    assert data["groups"]["names"] == ["A", "B", "C"] and data["groups"]["method"] == "user"
    assert not list(tmp_path.glob("m.card.*"))


def _edit(cohort_csv: Path, tmp_path: Path, edit) -> Path:
    frame = pd.read_csv(cohort_csv)
    edit(frame)
    path = tmp_path / "edited.csv"
    frame.to_csv(path, index=False)
    return path


def _set(column: str, index: int, value):
    def edit(frame: pd.DataFrame) -> None:
        frame[column] = frame[column].astype(object)
        frame.loc[index, column] = value

    return edit


def _few_events(frame: pd.DataFrame) -> None:
    frame["dmfs_event"] = 0
    frame.loc[:8, "dmfs_event"] = 1


BAD_TABLES = {
    "misspelled column": (
        lambda f: f.rename(columns={"time_days": "time_day"}, inplace=True),
        "time_days' not found",
    ),
    "non-numeric time": (_set("time_days", 3, "soon"), "non-numeric"),
    "negative time": (_set("time_days", 3, -5.0), "negative"),
    "bad event": (_set("dmfs_event", 3, 2), "must be 0/1"),
    "nan gene": (_set("PLK1", 3, np.nan), "gene column 'PLK1' has 1 missing"),
    "few events": (_few_events, "only 9 event"),
    "gene absent": (
        lambda f: f.drop(columns=["CLN8"], inplace=True),
        "signature gene(s) not in the table: CLN8",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_fail_with_one_line_and_write_nothing(
    cli, case: str, cohort_csv: Path, tmp_path: Path
) -> None:
    edit, message = BAD_TABLES[case]
    table = _edit(cohort_csv, tmp_path, edit)
    out_dir = tmp_path / "out"
    result = cli(base_args(table, out_dir / "m.json"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--time-unit": "years"}, "time unit mismatch"),
        ({"--time-unit": "weeks"}, "invalid value for '--time-unit': 'weeks'"),
        ({"--signature": "wang67"}, "invalid value for '--signature': 'wang67'"),
        ({"--covariates": "grade:continuous", "--missing": "impute"}, "covariate 'grade' is not numeric"),
        ({"--covariates": "grade"}, "covariate 'grade' has 2 missing value(s)"),
        ({"--covariates": "age:nominal"}, "--covariates: 'nominal' is not one of continuous"),
        ({"--missing": "drop"}, "invalid value for '--missing': 'drop'"),
        ({"--covariates": "age,size"}, "covariate column 'size' not found"),
        ({"--cutoffs": "1,2", "--groups": "tertiles"}, "--cutoffs: cut-offs and a quantile split"),
        ({"--out": "model.txt"}, "--out: model.txt must be a .json"),
        ({"--expression-source": "rna"}, "--expression-source: 'rna' is not one of measured, predicted"),
    ],
)
def test_bad_options(cli, change: dict[str, str], message: str, cohort_csv: Path, tmp_path: Path) -> None:
    args = base_args(cohort_csv, tmp_path / "m.json")
    for option, value in change.items():
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    result = cli(args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not list(tmp_path.glob("m*"))


def test_missing_table_and_missing_option(cli, tmp_path: Path, cohort_csv: Path) -> None:
    result = cli(base_args(tmp_path / "nope.csv", tmp_path / "m.json"))
    assert result.exit_code == 2 and "table not found" in result.stderr
    args = base_args(cohort_csv, tmp_path / "m.json")
    del args[args.index("--time-col") : args.index("--time-col") + 2]
    result = cli(args)
    assert result.exit_code == 2 and "missing option '--time-col'" in result.stderr


def _one_line_error(result, *messages: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for message in messages:
        assert message in lines[0], lines[0]
    return lines[0]


def _with_ids(cohort_csv: Path) -> pd.DataFrame:
    frame = pd.read_csv(cohort_csv)
    frame.insert(0, "patient_id", [f"PAT-{i:04d}-SMITH" for i in range(len(frame))])
    return frame


def test_messy_csv_files_get_short_messages(cli, cohort_csv: Path, tmp_path: Path) -> None:
    frame = _with_ids(cohort_csv)
    semicolon = tmp_path / "semicolon.csv"
    frame.to_csv(semicolon, sep=";", index=False)
    line = _one_line_error(cli(base_args(semicolon, tmp_path / "m.json")), "looks semicolon-separated")
    assert len(line) < 250 and "CLN8" not in line
    latin = tmp_path / "latin.csv"
    frame.rename(columns={"age": "âge"}).to_csv(latin, index=False, encoding="cp1252")
    _one_line_error(cli(base_args(latin, tmp_path / "m.json")), "not UTF-8 text", "Save it as UTF-8 CSV")
    args = base_args(cohort_csv, tmp_path / "m.json")
    args[args.index("time_days")] = "follow_up"
    line = _one_line_error(cli(args), "column 'follow_up' not found", ", ...")
    assert line.count(",") < 15  # at most 10 column names listed
    assert not list(tmp_path.glob("m*"))


def test_errors_do_not_echo_cell_values(cli, cohort_csv: Path, tmp_path: Path) -> None:
    table = tmp_path / "ids.csv"
    _with_ids(cohort_csv).to_csv(table, index=False)
    args = base_args(table, tmp_path / "m.json")
    args[args.index("dmfs_event")] = "patient_id"
    line = _one_line_error(cli(args), "event column 'patient_id' must be 0/1", "198 other value(s)")
    assert "pat-" not in line.lower() and "smith" not in line.lower()


def test_cutoffs_leaving_a_group_empty(cli, cohort_csv: Path, tmp_path: Path) -> None:
    result = cli(base_args(cohort_csv, tmp_path / "m.json") + ["--cutoffs", "0,5"])
    _one_line_error(result, "leave risk group 'high' empty in the training data")
    assert not list(tmp_path.glob("m*"))


def test_short_follow_up_refuses_risk_cutoffs_at_5_years(cli, cohort_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(cohort_csv)
    four_years = 4 * 365.25  # follow-up ends before the 5-year horizon
    frame["dmfs_event"] = frame["dmfs_event"] * (frame["time_days"] <= four_years)
    frame["time_days"] = frame["time_days"].clip(upper=four_years)
    frame.to_csv(tmp_path / "short.csv", index=False)
    result = cli(
        base_args(tmp_path / "short.csv", tmp_path / "m.json")
        + ["--cutoffs", "0.1,0.3", "--cutoff-scale", "risk5"]
    )
    _one_line_error(result, "baseline survival at 5 years is not estimable")
    assert not list(tmp_path.glob("m*"))


def test_unpenalised_fit_that_fails_is_one_line(cli, cohort_csv: Path, tmp_path: Path) -> None:
    # 57 genes, 51 events: sksurv's Newton-Raphson breaks down ("search direction contains NaN")
    result = cli(base_args(cohort_csv, tmp_path / "m.json") + ["--penalty", "0"])
    _one_line_error(result, "unpenalised Cox fit failed", "Drop --penalty 0")
    assert not list(tmp_path.glob("m*"))


def test_separated_unpenalised_fit_is_warned_about(cli, cohort_csv: Path, tmp_path: Path) -> None:
    subset = tmp_path / "sub40.csv"
    pd.read_csv(cohort_csv).sample(40, random_state=1).to_csv(subset, index=False)
    out = tmp_path / "m.json"
    result = cli(base_args(subset, out) + ["--penalty", "0", "--no-card"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    largest = max(abs(v) for v in data["coefficients"].values())
    assert largest > 10
    (warning,) = data["fit_warnings"]
    assert "exceed 10 per SD" in warning and warning in data["notes"]
    assert f"warning: {warning}" in result.stderr
    row = pd.read_csv(cohort_csv).iloc[0]
    flags = RiskModel.load(out).apply({g: row[g] for g in data["genes"]}).flags
    assert flags[0].message == f"risk model warning: {warning}"


def test_tiny_cohort_without_signal_is_one_line(cli, cohort_csv: Path, tmp_path: Path) -> None:
    subset = tmp_path / "small.csv"
    pd.read_csv(cohort_csv).iloc[:25].assign(dmfs_event=1).to_csv(subset, index=False)
    result = cli(base_args(subset, tmp_path / "m.json"))
    _one_line_error(result, "every coefficient was shrunk to zero")


def test_the_stage_call_behind_the_command(cohort_csv: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from sequoia_clinic.errors import OptionError
    from sequoia_clinic.settings import RiskSettings, Settings
    from sequoia_clinic.survival.calibrate import CalibrateRequest, calibrate
    from sequoia_clinic.survival.cutoffs import CutoffSpec
    from sequoia_clinic.survival.records import ExpressionSource

    request = CalibrateRequest(
        table=cohort_csv,
        signature="wang76",
        time_col="time_days",
        event_col="dmfs_event",
        time_unit="days",
        out=tmp_path / "m.json",
        cutoffs=CutoffSpec("median"),
        expression_source=ExpressionSource.PREDICTED,
        card=False,
    )
    settings = Settings(risk=RiskSettings(cv_repeats=1, n_bootstrap_metrics=10, n_bootstrap_fit=10))
    outcome = calibrate(request, settings)
    assert outcome.files == (tmp_path / "m.json",)
    assert json.loads((tmp_path / "m.json").read_text()) == outcome.model.to_dict()
    assert RiskModel.load(tmp_path / "m.json") == outcome.model
    assert outcome.model.cohort == "gse7390.csv" and outcome.model.group_names == ("low", "high")
    assert outcome.model.expression_source is ExpressionSource.PREDICTED
    with pytest.raises(OptionError) as caught:
        calibrate(replace(request, time_unit="weeks"), settings)
    assert caught.value.option == "time_unit"
