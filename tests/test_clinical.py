"""Clinico-genomic risk: symbols in table columns, typed covariates, the score options and the second default model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sequoia_clinic.clinical_choices import MissingRule
from sequoia_clinic.errors import OptionError, TableError
from sequoia_clinic.settings import RiskSettings
from sequoia_clinic.signatures.mapping import DuplicateGeneColumns, load_mapper, match_gene_columns
from sequoia_clinic.signatures.registry import get_signature
from sequoia_clinic.survival.clinical import (
    ClinicalInputs,
    CovariateKind,
    MissingCovariate,
    encode_covariates,
    parse_covariates,
    patient_predictors,
)
from sequoia_clinic.survival.fit import fit_risk_model
from sequoia_clinic.survival.model import RiskModel

FAST = RiskSettings(cv_repeats=1, n_bootstrap_metrics=10, n_bootstrap_fit=10)
ROOT = Path(__file__).resolve().parents[1]
CLINICAL_MODEL = ROOT / "models" / "risk" / "gse7390-wang76-clinical.json"
GRADE_WORDS = {"well differentiated": 1, "intermediate": 2, "poorly differentiated": 3}


# ---- item 1: old and current symbols in table columns and signatures ---------------------------------------
def test_table_columns_are_mapped_through_the_alias_table() -> None:
    match = match_gene_columns(
        ["time", "GOLPH2", "rna_ORC3L", "esr1", "PLK1"], ["GOLM1", "ORC3", "ESR1", "PLK1"], load_mapper()
    )
    assert match.columns == {"GOLM1": "GOLPH2", "ORC3": "rna_ORC3L", "ESR1": "esr1", "PLK1": "PLK1"}
    assert match.renamed == (("GOLPH2", "GOLM1"), ("ORC3L", "ORC3"), ("esr1", "ESR1"))
    with pytest.raises(DuplicateGeneColumns, match="columns 'GOLPH2' and 'GOLM1' both hold gene GOLM1"):
        match_gene_columns(["GOLPH2", "GOLM1"], ["GOLM1"], load_mapper())


def test_old_symbols_in_signature_and_table_calibrate(gse7390_table: pd.DataFrame, tmp_path: Path) -> None:
    """The bug of the issue: a signature file and a table both with GOLPH2/ORC3L were refused."""
    genes = list(get_signature("wang76").genes)
    old = {"GOLM1": "GOLPH2", "ORC3": "ORC3L", "CENPU": "MLF1IP"}
    signature = tmp_path / "sig.csv"
    pd.DataFrame({"gene": [old.get(g, g) for g in genes]}).to_csv(signature, index=False)
    table = gse7390_table[[*genes, "time_days", "dmfs_event"]].rename(columns=old)
    model = fit_risk_model(
        table,
        get_signature(str(signature)),
        time_col="time_days",
        event_col="dmfs_event",
        time_unit="days",
        settings=FAST,
    )
    assert set(old) <= set(model.genes)
    note = next(n for n in model.notes if n.startswith("table columns read"))
    assert all(note.count(f"{o} as {n}") == 1 for n, o in old.items())  # each rename reported once
    both = table.assign(GOLM1=table["GOLPH2"])
    with pytest.raises(TableError, match="columns 'GOLPH2' and 'GOLM1' both hold gene GOLM1"):
        fit_risk_model(
            both,
            get_signature("wang76"),
            time_col="time_days",
            event_col="dmfs_event",
            time_unit="days",
            settings=FAST,
        )


# ---- item 2: typed covariates ---------------------------------------------------------------------------
def test_covariates_are_typed_and_missing_values_follow_the_rule(gse7390_table: pd.DataFrame) -> None:
    frame = gse7390_table
    declared = parse_covariates("age,size,grade,er,site:categorical:b")[:4]
    with pytest.raises(TableError, match="covariate 'grade' has 2 missing value"):
        encode_covariates(frame, declared, MissingRule.REFUSE, None)
    encoded = encode_covariates(frame, declared, MissingRule.IMPUTE, None)
    assert encoded.names == ("age", "size_cm", "grade", "er[positive]")
    kinds = [s.kind for s in encoded.specs]
    assert kinds == [
        CovariateKind.CONTINUOUS,
        CovariateKind.CONTINUOUS,
        CovariateKind.ORDINAL,
        CovariateKind.CATEGORICAL,
    ]
    # independent encoding: grade words -> 1..3 with the median of the known grades for 'unkown'
    known = frame["grade"].map(GRADE_WORDS)
    expected_grade = known.fillna(known.median()).to_numpy()
    np.testing.assert_array_equal(encoded.values[:, 2], expected_grade)
    np.testing.assert_array_equal(encoded.values[:, 3], (frame["er"] == "positive").astype(float))
    np.testing.assert_array_equal(encoded.values[:, 0], frame["age"])
    grade = encoded.specs[2]
    assert (grade.imputed, grade.impute_value, grade.levels) == (2, "2", ("1", "2", "3"))
    assert "grade: 2 imputed with 2" in encoded.missing_summary()


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"age": -3.0}, "age"),
        ({"nodes": 2.5}, "nodes"),
        ({"er": "maybe"}, "er"),
        ({"grade": 4}, "grade"),
        ({"tumour_size_cm": float("nan")}, "tumour_size"),
    ],
)
def test_clinical_inputs_refuse_bad_values_naming_the_option(kwargs: dict, option: str) -> None:
    with pytest.raises(OptionError) as info:
        ClinicalInputs(**kwargs)
    assert info.value.option == option


def test_shipped_clinical_model_scores_a_patient_like_the_formula() -> None:
    model = RiskModel.load(CLINICAL_MODEL)
    assert model.covariates == ("age", "size_cm", "grade", "er[positive]")
    inputs = ClinicalInputs(age=52, tumour_size_cm=2.5, grade=3, er="positive")
    covariates = patient_predictors(model.clinical, inputs)
    assert covariates == {"age": 52.0, "size_cm": 2.5, "grade": 3.0, "er[positive]": 1.0}
    with pytest.raises(MissingCovariate) as info:
        patient_predictors(model.clinical, ClinicalInputs(age=52, grade=3, er="positive"))
    assert info.value.option == "tumour_size"
    expression = dict(zip(model.genes, model.means[: len(model.genes)], strict=True))  # an average tumour
    risk = model.apply(expression, covariates)
    names = model.predictors
    values = np.array([expression.get(n, covariates.get(n)) for n in names], dtype=float)
    lp = float(((values - np.array(model.means)) / np.array(model.sds)) @ np.array(model.coefficients))
    assert risk.linear_predictor == pytest.approx(lp)
    grade = model.predictor_table[names.index("grade")]
    assert grade.kind.value == "covariate" and model.training.missing_data.startswith(
        "clinical values missing"
    )


def test_clinical_model_gain_is_measured_on_the_same_folds() -> None:
    genes = json.loads((ROOT / "models/risk/gse7390-wang76.json").read_text())
    both = json.loads(CLINICAL_MODEL.read_text())
    assert genes["performance"]["design"]["fold_seeds"] == both["performance"]["design"]["fold_seeds"]
    for key in ("harrell_c", "auc_5y", "ibs", "calibration_slope_10y"):
        for doc in (genes, both):
            m = doc["performance"]["metrics"][key]
            assert m["ci_lower"] <= m["mean"] <= m["ci_upper"]


# ---- CLI ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--age", "-3"], "--age"),
        (["--tumour-size", "big"], "--tumour-size"),
        (["--nodes", "2.5"], "--nodes"),
        (["--er", "maybe"], "--er"),
        (["--grade", "4"], "--grade"),
        (["--specimen-type", "fresh"], "--specimen-type"),
    ],
)
def test_score_refuses_bad_clinical_values_in_one_line(
    cli, args: list[str], flag: str, tmp_path: Path
) -> None:
    result = cli(["score", "x.svs", "--out", str(tmp_path / "o"), *args])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0]


def test_score_refuses_a_missing_model_covariate(cli, cmu_svs: Path, tmp_path: Path) -> None:
    result = cli(
        [
            "score",
            str(cmu_svs),
            "--out",
            str(tmp_path / "o"),
            "--risk-model",
            str(CLINICAL_MODEL),
            "--age",
            "52",
            "--grade",
            "2",
            "--er",
            "positive",
            "--quiet",
        ]
    )
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert (
        lines[0].startswith("error: --tumour-size: the risk model needs size_cm")
        and not (tmp_path / "o").exists()
    )


def test_calibrate_with_typed_covariates(cli, gse7390_table: pd.DataFrame, tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    gse7390_table.to_csv(table, index=False)
    out = tmp_path / "m.json"
    base = [
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
        "--cv-repeats",
        "1",
        "--bootstrap",
        "10",
        "--no-card",
        "--covariates",
        "age,size,grade,er",
    ]
    refused = cli(base)
    assert refused.exit_code == 2 and "--missing impute" in refused.stderr
    result = cli([*base, "--missing", "impute"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [c["name"] for c in doc["clinical_covariates"]] == ["age", "size_cm", "grade", "er"]
    assert doc["covariates"] == ["age", "size_cm", "grade", "er[positive]"]
    assert doc["clinical_covariates"][2]["imputed"] == 2


def test_stratify_encodes_a_clinical_models_covariates(gse7390_table: pd.DataFrame) -> None:
    from sequoia_clinic.survival.stratify import _model_lp

    model = RiskModel.load(CLINICAL_MODEL)
    table = gse7390_table[gse7390_table["grade"] != "unkown"].reset_index(drop=True)
    lp = _model_lp(table, model, None)
    for i in (0, 7, 100):
        row = table.iloc[i]
        inputs = ClinicalInputs(
            age=float(row["age"]),
            tumour_size_cm=float(row["size"]),
            grade=GRADE_WORDS[row["grade"]],
            er=str(row["er"]),
        )
        expected = model.apply(row[list(model.genes)].to_dict(), patient_predictors(model.clinical, inputs))
        assert lp[i] == pytest.approx(expected.linear_predictor)
    with pytest.raises(TableError, match="covariate 'grade' has 2 missing"):
        _model_lp(gse7390_table, model, None)
