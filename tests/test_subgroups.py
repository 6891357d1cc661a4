"""``calibrate --subgroup``: out-of-fold Harrell's C per subgroup level (TRIPOD+AI item 14) on GSE7390.

Each level's C is checked against lifelines' ``concordance_index`` on the first CV repeat's out-of-fold
linear predictor, recomputed here with the same seeded ``cv_repeat`` call; n and events against pandas.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index

from sequoia_clinic.errors import OptionError
from sequoia_clinic.signatures.registry import get_signature
from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.subgroups import SubgroupSpec, parse_subgroup

FAST = ["--cv-repeats", "1", "--bootstrap", "10"]


@pytest.fixture(scope="module")
def cohort_csv(gse7390_table: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    columns = [*get_signature("wang76").genes, "time_days", "dmfs_event", "age", "er", "grade"]
    path = tmp_path_factory.mktemp("cohort") / "gse7390.csv"
    gse7390_table[columns].to_csv(path, index=False)
    return path


def _args(table: Path, out: Path, *subgroups: str) -> list[str]:
    args = ["calibrate", str(table), "--signature", "wang76", "--time-col", "time_days"]
    args += ["--event-col", "dmfs_event", "--time-unit", "days", "--out", str(out), *FAST]
    for spec in subgroups:
        args += ["--subgroup", spec]
    return args


@pytest.fixture(scope="module")
def calibrated(cli, cohort_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "risk.json"
    result = cli(_args(cohort_csv, out, "age:50", "er"))
    assert result.exit_code == 0, result.output
    return out


def _out_of_fold_lp(cohort_csv: Path, model: RiskModel) -> np.ndarray:
    """The first repeat's out-of-fold lp, from the same seeded CV call as calibration."""
    from sequoia_clinic.survival.cutoffs import CutoffSpec
    from sequoia_clinic.survival.fit import _options, cohort_matrix, cv_repeat

    settings = model.settings
    frame = pd.read_csv(cohort_csv)
    data = cohort_matrix(frame, get_signature("wang76"), "time_days", "dmfs_event", "days")
    oof = cv_repeat(
        data.values,
        data.survival.time,
        data.survival.event,
        _options(settings),
        CutoffSpec("tertiles"),
        settings.outer_folds,
        settings.seed,
        np.array([1.0, 5.0]),
    )
    return oof.lp


def test_subgroup_c_matches_an_independent_computation(calibrated: Path, cohort_csv: Path) -> None:
    model = RiskModel.load(calibrated)
    frame = pd.read_csv(cohort_csv)
    lp = _out_of_fold_lp(cohort_csv, model)
    masks = {
        "age < 50": (frame["age"] < 50).to_numpy(),
        "age ≥ 50": (frame["age"] >= 50).to_numpy(),
        **{f"er = {v}": (frame["er"] == v).to_numpy() for v in sorted(frame["er"].unique())},
    }
    rows = {row.level: row for row in model.subgroup_performance}
    assert list(rows) == list(masks)
    assert [row.subgroup for row in model.subgroup_performance] == ["age:50", "age:50", "er", "er"]
    for level, mask in masks.items():
        row = rows[level]
        assert row.n == int(mask.sum())
        assert row.events == int(frame.loc[mask, "dmfs_event"].sum())
        expected = concordance_index(frame.loc[mask, "time_days"], -lp[mask], frame.loc[mask, "dmfs_event"])
        assert row.harrell_c == pytest.approx(expected, abs=1e-9)
        assert row.ci_lower is not None and row.ci_upper is not None
        assert 0.0 <= row.ci_lower <= row.ci_upper <= 1.0
        assert row.bootstrap_valid == 10 and row.note is None
    assert sum(rows[f"er = {v}"].n for v in frame["er"].unique()) == len(frame)


def test_subgroups_round_trip_and_show_in_card_and_tripod(calibrated: Path) -> None:
    from sequoia_clinic.survival.tripod import tripod_items

    data = json.loads(calibrated.read_text())
    assert [set(r) for r in data["subgroup_performance"]][0] >= {"subgroup", "level", "n", "events"}
    model = RiskModel.from_dict(data)
    assert model.to_dict() == data
    item = next(i for i in tripod_items(model) if i.number == "14")
    assert item.supplied and "age < 50: n=" in item.text and "er = positive" in item.text
    card = calibrated.with_name("risk.card.md").read_text()
    assert "## Performance in subgroups (TRIPOD+AI item 14)" in card
    assert f"| age:50 | age ≥ 50 | {model.subgroup_performance[1].n} |" in card
    # a file without subgroups keeps loading, and is written without the key
    del data["subgroup_performance"]
    old = RiskModel.from_dict(data)
    assert old.subgroup_performance == () and "subgroup_performance" not in old.to_dict()
    assert not next(i for i in tripod_items(old) if i.number == "14").supplied


def test_level_with_few_events_gets_no_c() -> None:
    from sequoia_clinic.survival.subgroups import subgroup_levels, subgroup_performance

    frame = pd.DataFrame({"site": ["a"] * 30 + ["b"] * 30})
    rng = np.random.default_rng(0)
    time = rng.uniform(1, 10, 60)
    event = np.r_[np.ones(15, bool), np.zeros(15, bool), np.ones(5, bool), np.zeros(25, bool)]
    levels = subgroup_levels(frame, [SubgroupSpec("site")])
    rows = subgroup_performance(levels, time, event, rng.normal(size=60), 20, 0)
    assert [r.level for r in rows] == ["site = a", "site = b"]
    assert rows[0].harrell_c is not None and rows[0].bootstrap_valid == 20
    assert rows[1].harrell_c is None and rows[1].note is not None and "5 event(s)" in rows[1].note


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("stage", "subgroup column 'stage' not found"),
        ("er:1", "subgroup column 'er' is not numeric"),
        ("age:old", "'age:old': the cut-offs must be numbers"),
        ("age:60/50", "'age:60/50': the cut-offs must be finite and increasing"),
    ],
)
def test_bad_subgroup_is_one_line_exit_2(
    cli, cohort_csv: Path, tmp_path: Path, spec: str, message: str
) -> None:
    result = cli(_args(cohort_csv, tmp_path / "m.json", spec))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --subgroup: ") and message in lines[0], (
        result.stderr
    )
    assert not list(tmp_path.glob("m*"))


def test_help_names_the_option(cli) -> None:
    result = cli(["calibrate", "--help"])
    assert result.exit_code == 0 and "--subgroup" in result.output, result.output


def test_parse_subgroup() -> None:
    assert parse_subgroup("age:50/65") == SubgroupSpec("age", (50.0, 65.0))
    assert parse_subgroup(" er ") == SubgroupSpec("er")
    with pytest.raises(OptionError) as caught:
        parse_subgroup(":50")
    assert caught.value.option == "subgroup"
