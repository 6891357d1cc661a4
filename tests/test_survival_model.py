"""The shipped default risk model (GSE7390, wang76): figures, round trip, apply, absolute risk."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sequoia_clinic.errors import OptionError, RiskModelError
from sequoia_clinic.signatures.registry import get_signature
from sequoia_clinic.survival.model import HorizonRisk, RiskModel

MODEL = Path(__file__).resolve().parents[1] / "models" / "risk" / "gse7390-wang76.json"


@pytest.fixture(scope="module")
def model() -> RiskModel:
    return RiskModel.load(MODEL)


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(MODEL.read_text())


@pytest.fixture(scope="module")
def gse7390_genes(gse7390_table: pd.DataFrame) -> pd.DataFrame:
    """Gene-level GSE7390: the mean of each gene's probes, built in conftest (not by the package)."""
    return gse7390_table[list(get_signature("wang76").genes)]


def test_the_default_model_is_built_from_the_same_table(gse7390_table: pd.DataFrame) -> None:
    from sequoia_clinic.survival.build_default import gse7390_table as build_default_table

    built = build_default_table()
    pd.testing.assert_frame_equal(built, gse7390_table[list(built.columns)])


def test_cross_validated_harrell_c_is_plausible(raw: dict) -> None:
    c = raw["performance"]["metrics"]["harrell_c"]
    assert raw["performance"]["design"]["repeats"] >= 5
    assert len(set(raw["performance"]["design"]["fold_seeds"])) == raw["performance"]["design"]["repeats"]
    assert 0.60 <= c["mean"] <= 0.80  # far above = leakage, far below = a bug
    assert 0.55 <= c["min_over_repeats"] <= c["mean"] <= c["max_over_repeats"] <= 0.85
    assert c["sd_over_repeats"] > 0
    assert c["ci_lower"] < c["mean"] < c["ci_upper"]
    assert raw["performance"]["design"]["penalty_rechosen_in_each_training_fold"] is True
    metrics = raw["performance"]["metrics"]
    for key in (
        "uno_c",
        "auc_3y",
        "auc_5y",
        "auc_10y",
        "ibs",
        "calibration_slope_5y",
        "calibration_slope_10y",
        "calibration_in_the_large_5y",
        "calibration_in_the_large_10y",
    ):
        assert metrics[key]["mean"] is not None and metrics[key]["ci_lower"] is not None
    assert metrics["ibs"]["mean"] <= metrics["ibs_null_km"]["mean"] + 0.01


def test_training_summary_matches_the_cohort(raw: dict, gse7390_table: pd.DataFrame) -> None:
    training = raw["training"]
    assert training["n"] == 198 and training["events"] == int(gse7390_table["dmfs_event"].sum()) == 51
    assert 13.0 < training["median_follow_up_years"] < 14.5  # reverse KM, 13.7 y in the reference notes
    assert raw["time_unit"] == "years" and training["source_time_unit"] == "days"
    assert "MEASURED microarray" in raw["notes"][0]
    assert set(raw["signature"]["unmapped"]) >= {"MYH2", "OR12D2"}


def test_applying_reproduces_the_training_linear_predictors(
    model: RiskModel, raw: dict, gse7390_genes: pd.DataFrame
) -> None:
    # independent: straight from the JSON numbers with numpy
    means = np.array(raw["standardisation"]["mean"])
    sds = np.array(raw["standardisation"]["sd"])
    beta = np.array([raw["coefficients"][g] for g in raw["genes"]])
    lp = ((gse7390_genes[raw["genes"]].to_numpy() - means) / sds) @ beta
    np.testing.assert_allclose(np.sort(lp), raw["score_scale"]["training_lp_sorted"], atol=1e-10)
    applied = [model.apply(row).linear_predictor for row in gse7390_genes.iloc[:20].to_dict("records")]
    np.testing.assert_allclose(applied, lp[:20], atol=1e-10)
    tertiles = np.quantile(lp, [1 / 3, 2 / 3])
    np.testing.assert_allclose(model.cutoffs, tertiles, atol=1e-10)
    counts = np.bincount(np.searchsorted(tertiles, lp, side="right"), minlength=3)
    assert list(counts) == raw["groups"]["training_counts"]


def test_round_trip(model: RiskModel, raw: dict, tmp_path: Path) -> None:
    assert model.to_dict() == raw
    again = RiskModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model
    model.save(tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text()) == raw
    assert RiskModel.load(tmp_path / "copy.json") == model


def test_absolute_risk_formula_bounds_and_monotonicity(model: RiskModel, raw: dict) -> None:
    times = np.array(raw["baseline_survival"]["times"])
    surv = np.array(raw["baseline_survival"]["survival"])
    s0_5 = surv[np.searchsorted(times, 5.0, side="right") - 1]
    assert model.absolute_risk(0.3, 5.0) == pytest.approx(1 - s0_5 ** math.exp(0.3))
    assert raw["baseline_survival_at"]["5"] == pytest.approx(s0_5)
    risks = [model.absolute_risk(lp, t) for t in (5.0, 10.0) for lp in np.linspace(-3, 3, 61)]
    assert all(0.0 <= r <= 1.0 for r in risks)
    five, ten = np.array(risks[:61]), np.array(risks[61:])
    assert np.all(np.diff(five) > 0) and np.all(np.diff(ten) > 0) and np.all(ten >= five)
    assert np.all(np.diff(surv) <= 0)


def test_patient_risk_with_interval(model: RiskModel, gse7390_genes: pd.DataFrame) -> None:
    results = [model.apply(row) for row in gse7390_genes.iloc[::10].to_dict("records")]
    for r in results:
        assert [h.years for h in r.horizons] == [5.0, 10.0]
        for h in r.horizons:
            assert 0 <= h.ci_lower <= h.risk <= h.ci_upper <= 1
            assert h.risk == pytest.approx(model.absolute_risk(r.linear_predictor, h.years))
        assert 0 <= r.score <= 100 and r.group == model.group_names[r.group_index]
        assert r.out_of_range == [] and r.flags == []
    order = np.argsort([r.linear_predictor for r in results])
    assert np.all(np.diff([results[i].at(10.0).risk for i in order]) > 0)
    assert np.all(np.diff([results[i].score for i in order]) > 0)
    as_dict = results[0].to_dict()
    assert set(as_dict) >= {"linear_predictor", "score", "group", "horizons", "z_scores", "flags"}
    assert as_dict["horizons"][1] == {
        "years": 10.0,
        "risk": results[0].at(10.0).risk,
        "ci_lower": results[0].at(10.0).ci_lower,
        "ci_upper": results[0].at(10.0).ci_upper,
    }
    json.dumps(as_dict)


def test_percentile_scale(model: RiskModel) -> None:
    lps = np.array(model.training_lp)
    assert model.percentile(lps[0] - 1) == 0.0 and model.percentile(lps[-1] + 1) == 100.0
    assert model.percentile(float(np.median(lps))) == pytest.approx(50.0, abs=0.6)
    assert model.percentile(lps[9]) == pytest.approx(100 * 9.5 / lps.size)


def test_out_of_range_and_scale_flags(model: RiskModel, gse7390_genes: pd.DataFrame) -> None:
    row = gse7390_genes.iloc[0].to_dict()
    row["CLN8"] = 100.0
    result = model.apply(row)
    assert (
        result.out_of_range == ["CLN8"]
        and "outside the calibration range" in result.flags[0].message
        and result.flags[0].code == "inputs-out-of-range"
    )
    scaled = {g: v * 100 for g, v in gse7390_genes.iloc[0].items()}
    assert any(
        f.code == "inputs-on-other-scale" and "another scale" in f.message for f in model.apply(scaled).flags
    )
    with pytest.raises(RiskModelError, match="missing"):
        model.apply({"CLN8": 1.0})
    with pytest.raises(RiskModelError, match="non-finite"):
        model.apply(dict(row, CLN8=float("nan")))


def test_stored_curves_for_the_report(raw: dict) -> None:
    km = raw["cross_validated_km"]
    assert [g["label"] for g in km["groups"]] == ["low", "intermediate", "high"]
    assert sum(g["n"] for g in km["groups"]) == 198 and sum(g["events"] for g in km["groups"]) == 51
    for group in km["groups"]:
        assert np.all(np.diff(group["survival"]) <= 0)
        assert np.all(np.array(group["lower"]) <= np.array(group["survival"]) + 1e-12)
        assert len(group["ticks"]) == len(group["at_risk"]) == len(group["cumulative_events"])
    at10 = [g["at_horizons"][2]["survival"] for g in km["groups"]]
    assert at10[0] > at10[2]
    assert km["logrank"]["p_value"] < 0.05
    assert {row["name"] for row in raw["predictors"]} == set(raw["genes"])
    assert (
        len(raw["bootstrap_fit"]["coefficients"])
        == raw["bootstrap_fit"]["n"]
        == raw["settings"]["n_bootstrap_fit"]
    )
    assert set(raw["calibration_plot"]) == {"5", "10"}


def test_malformed_model_files(tmp_path: Path, raw: dict) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RiskModelError, match="not valid JSON"):
        RiskModel.load(bad)
    broken = dict(raw)
    broken.pop("coefficients")
    bad.write_text(json.dumps(broken))
    with pytest.raises(RiskModelError, match="malformed"):
        RiskModel.load(bad)
    with pytest.raises(RiskModelError, match="not found"):
        RiskModel.load(tmp_path / "missing.json")


@pytest.mark.slow
def test_rebuild_reproduces_the_shipped_model(raw: dict) -> None:
    from sequoia_clinic.survival.build_default import build

    rebuilt = build().to_dict()
    assert rebuilt["coefficients"] == pytest.approx(raw["coefficients"], abs=1e-10)
    assert rebuilt["performance"]["metrics"]["harrell_c"]["mean"] == pytest.approx(
        raw["performance"]["metrics"]["harrell_c"]["mean"], abs=1e-10
    )


def _toy_model(
    last: float, draws5: list[float], coefficient: float = 1.0, fit_warnings: tuple[str, ...] = ()
) -> RiskModel:
    """One gene, lp = value; S0 steps down to 0.8 at ``last`` years (the longest follow-up).

    The audit records (performance, KM curves ...) are the shipped model's: only scoring is tested here.
    """
    times = tuple(np.linspace(last / 4, last, 4))
    draws = tuple(None if math.isnan(d) else d for d in draws5)  # None: that refit ended before 5 years
    shipped = RiskModel.load(MODEL)
    row = replace(shipped.predictor_table[0], name="A", mean=0.0, sd=1.0, coefficient_per_sd=coefficient)
    return replace(
        shipped,
        signature="toy",
        genes=("A",),
        covariates=(),
        means=(0.0,),
        sds=(1.0,),
        coefficients=(coefficient,),
        train_min=(-3.0,),
        train_max=(3.0,),
        baseline_times=times,
        baseline_survival=(0.95, 0.9, 0.85, 0.8),
        groups=replace(shipped.groups, cutoffs=(0.0,), names=("low", "high"), training_counts=(10, 11)),
        training_lp=tuple(np.linspace(-2, 2, 21)),
        bootstrap=replace(
            shipped.bootstrap,
            n=len(draws5),
            coefficients=tuple((coefficient * f,) for f in np.linspace(0.8, 1.2, len(draws5))),
            baseline_at=((5.0, draws), (10.0, draws)),
        ),
        max_follow_up=last,
        predictor_table=(row,),
        fit_warnings=fit_warnings,
    )


def test_no_absolute_risk_past_the_calibration_follow_up(tmp_path: Path) -> None:
    model = _toy_model(4.0, [0.8] * 10)
    assert model.baseline_survival_at(4.0) == 0.8 and model.baseline_survival_at(4.01) is None
    result = model.apply({"A": 0.5})
    assert result.horizons == (HorizonRisk(5.0, None), HorizonRisk(10.0, None))
    assert "absolute risk at 5 years not estimable: calibration follow-up ends at 4.0 years" in [
        f.message for f in result.flags
    ]
    # a file without max_follow_up (read as infinite) still stops at the last baseline time
    assert replace(model, max_follow_up=math.inf).apply({"A": 0.5}).at(5.0).risk is None


def test_risk_interval_uses_only_refits_that_reach_the_horizon(tmp_path: Path) -> None:
    draws = [0.7 + 0.01 * i for i in range(20)]
    draws[3] = math.nan  # that resample's follow-up ended before 5 years
    model = _toy_model(12.0, draws)
    model.save(tmp_path / "m.json")
    assert (
        json.loads((tmp_path / "m.json").read_text())["bootstrap_fit"]["baseline_survival_at"]["5"][3] is None
    )
    loaded = RiskModel.load(tmp_path / "m.json")
    result = loaded.apply({"A": 0.5})
    # independent: clog-log normal interval from the 19 refits that estimate S0(5)
    keep = np.isfinite(draws)
    beta = np.linspace(0.8, 1.2, 20)[keep]
    eta_b = np.log(-np.log(np.array(draws)[keep])) + beta * 0.5
    eta = np.log(-np.log(0.95)) + 0.5  # S0 steps at 3, 6, 9, 12 years: S0(5) = 0.95
    se = np.std(eta_b, ddof=1)
    expected = [1 - np.exp(-np.exp(eta - 1.96 * se)), 1 - np.exp(-np.exp(eta + 1.96 * se))]
    five = result.at(5.0)
    assert five.risk == pytest.approx(1 - 0.95 ** np.exp(0.5))
    assert [five.ci_lower, five.ci_upper] == pytest.approx(expected)
    sparse = _toy_model(12.0, [math.nan] * 5 + [0.8] * 15)  # only 75% of the refits reach 5 years
    result = sparse.apply({"A": 0.5})
    five = result.at(5.0)
    assert five.risk is not None and five.ci_lower is None and five.ci_upper is None
    assert any("95% CI of the 5-year risk not estimable" in f.message for f in result.flags)


def test_separated_model_warns_and_does_not_overflow() -> None:
    warning = "1 coefficient(s) exceed 10 per SD in absolute value (largest 500 for A)"
    model = _toy_model(12.0, [0.8] * 10, coefficient=500.0, fit_warnings=(warning,))
    result = model.apply({"A": 3.0})  # lp = 1500: exp(lp) overflows a float
    assert result.at(5.0) == HorizonRisk(5.0, 1.0, 1.0, 1.0)
    assert result.flags[0].message == f"risk model warning: {warning}"
    assert model.apply({"A": -3.0}).at(10.0).risk == 0.0


def test_every_audit_record_round_trips(model: RiskModel, raw: dict) -> None:
    from sequoia_clinic.survival import records

    sections = {
        "signature": (records.SignatureSummary, model.signature_details),
        "penalty": (records.PenaltyChoice, model.penalty),
        "groups": (records.GroupRule, model.groups),
        "training": (records.TrainingSummary, model.training),
        "performance": (records.Performance, model.performance),
        "ph_check": (records.PHCheck, model.ph_check),
        "cross_validated_km": (records.CrossValidatedKM, model.cross_validated_km),
        "bootstrap_fit": (records.BootstrapFit, model.bootstrap),
    }
    for key, (kind, record) in sections.items():
        assert record.to_dict() == raw[key], key
        assert kind.from_dict(json.loads(json.dumps(record.to_dict())), key) == record, key
    for row, stored in zip(model.predictor_table, raw["predictors"], strict=True):
        assert row.to_dict() == stored and records.PredictorRow.from_dict(stored) == row
    assert records.calibration_plot_to_dict(model.calibration_plot) == raw["calibration_plot"]
    assert records.risk_settings_from_dict(raw["settings"]) == model.settings
    # typed values, straight from the JSON numbers
    assert model.performance.metric("harrell_c").mean == raw["performance"]["metrics"]["harrell_c"]["mean"]
    assert model.performance.metric("no_such_metric") is None
    assert [g.label for g in model.cross_validated_km.groups] == list(model.group_names)
    assert (
        model.cross_validated_km.groups[0].at(10.0).survival
        == (raw["cross_validated_km"]["groups"][0]["at_horizons"][2]["survival"])
    )
    assert model.expression_source is records.ExpressionSource.MEASURED
    assert model.bootstrap.draws_at(5.0) == tuple(raw["bootstrap_fit"]["baseline_survival_at"]["5"])


@pytest.mark.parametrize(
    ("edit", "where", "expected"),
    [
        (
            lambda d: d["performance"]["metrics"]["uno_c"].update(mean="high"),
            "performance.metrics.uno_c.mean",
            "finite number",
        ),
        (lambda d: d["training"].pop("events"), "training.events", "is missing"),
        (
            lambda d: d["cross_validated_km"]["groups"][1].update(at_risk=[1.5]),
            "cross_validated_km.groups[1].at_risk[0]",
            "whole number",
        ),
        (lambda d: d["predictors"][3].update(kind="protein"), "predictors[3].kind", "gene or covariate"),
        (lambda d: d.update(ph_check=[]), "ph_check", "must be an object"),
        (lambda d: d["groups"].update(names=["low", "high"]), "groups", "one name and one count per group"),
        (
            lambda d: d.update(expression_source="guessed"),
            "expression_source",
            "measured, predicted or unknown",
        ),
        (lambda d: d["coefficients"].update(CLN8=float("inf")), "coefficients.CLN8", "finite number"),
    ],
)
def test_a_malformed_section_names_the_file_and_the_key(
    raw: dict, tmp_path: Path, edit, where: str, expected: str
) -> None:
    data = json.loads(json.dumps(raw))
    edit(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))  # inf is written as Infinity, which json.loads reads back
    with pytest.raises(RiskModelError) as caught:
        RiskModel.load(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: malformed risk model: '{where}'") and expected in message, message


def test_a_model_file_from_before_expression_sources_and_fit_warnings(raw: dict) -> None:
    from sequoia_clinic.survival.records import ExpressionSource

    legacy = {k: v for k, v in raw.items() if k not in ("expression_source", "fit_warnings")}
    model = RiskModel.from_dict(legacy)
    assert model.expression_source is ExpressionSource.UNKNOWN and model.fit_warnings == ()
    assert ExpressionSource.parse("predicted") is ExpressionSource.PREDICTED
    with pytest.raises(OptionError, match="'rna' is not one of measured, predicted, unknown"):
        ExpressionSource.parse("rna")
