"""Intended population and specimen adequacy: the model's declaration, the patient check and the slide gate."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pypdf import PdfReader

from sequoia_clinic.clinical_choices import SpecimenType
from sequoia_clinic.errors import InputPathError
from sequoia_clinic.pipeline.clinical import Adequacy, AdequacyRule, InadequateSpecimen, check_adequacy
from sequoia_clinic.qc import QCCode
from sequoia_clinic.report.schema import validate_result
from sequoia_clinic.survival.clinical import ClinicalInputs
from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.population import Population, load_population, population_flags

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "risk" / "gse7390-wang76.json"
CLINICAL_MODEL = ROOT / "models" / "risk" / "gse7390-wang76-clinical.json"


def test_default_models_declare_the_gse7390_population() -> None:
    for path in (DEFAULT_MODEL, CLINICAL_MODEL):
        population = RiskModel.load(path).population
        assert population is not None
        assert (population.max_nodes, population.age_min, population.age_max) == (0, 24, 60)
        assert population.specimen_types == ("resection",)
        assert Population.from_dict(population.to_dict()) == population


def test_values_outside_the_population_are_flagged_in_plain_words() -> None:
    population = Population(er=("positive",), max_nodes=0, age_min=24, age_max=60)
    assert population_flags(population, ClinicalInputs(), None) == ()  # nothing given, nothing flagged
    inside = ClinicalInputs(age=45, er="positive", nodes=0)
    assert population_flags(population, inside, SpecimenType.RESECTION) == ()
    flags = population_flags(population, ClinicalInputs(age=67, er="negative", nodes=2), SpecimenType.FROZEN)
    assert [f.code for f in flags] == [QCCode.OUTSIDE_POPULATION, QCCode.SPECIMEN_NOT_DEVELOPED]
    assert "ER negative (model: ER positive)" in flags[0].message
    assert "2 positive node(s) (model: node-negative)" in flags[0].message
    assert "age 67 (model: 24-60)" in flags[0].message
    assert "frozen specimen" in flags[1].message


def test_population_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"er": ["positive"], "max_nodes": 3, "treatment": "endocrine therapy"}))
    assert load_population(path).eligibility_lines()[:2] == ("ER positive", "at most 3 positive nodes")
    path.write_text(json.dumps({"er": ["maybe"]}))
    with pytest.raises(InputPathError, match="'population.er' must hold only negative, positive"):
        load_population(path)


def test_adequacy_refuses_with_measured_and_required_values() -> None:
    rule = AdequacyRule(min_tissue_mm2=4.0, min_tiles=100)
    assert check_adequacy(Adequacy(rule, 5.0, 300), allow_inadequate=False) == ()
    with pytest.raises(
        InadequateSpecimen, match=r"tissue 0.54 mm² \(minimum 4 mm²\) and 42 tiles kept \(minimum 100\)"
    ):
        check_adequacy(Adequacy(rule, 0.54, 42), allow_inadequate=False)
    (flag,) = check_adequacy(Adequacy(rule, 5.0, 42), allow_inadequate=True)
    assert flag.code is QCCode.INADEQUATE_SPECIMEN and "42 tiles kept (minimum 100)" in flag.message


def test_strict_population_refuses_before_any_work(cli, cmu_svs: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = cli(["score", str(cmu_svs), "--out", str(out), "--nodes", "2", "--strict-population", "--quiet"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: --strict-population:")
    assert "2 positive node(s)" in lines[0] and not out.exists()


def test_inadequate_slide_is_refused_then_flagged_on_page_one(cli, cmu_svs: Path, tmp_path: Path) -> None:
    refused = cli(["score", str(cmu_svs), "--out", str(tmp_path / "a"), "--quiet", "--repeats", "0"])
    lines = refused.stderr.strip().splitlines()
    assert refused.exit_code == 2 and len(lines) == 1
    assert "tissue 0.54 mm² (minimum 4 mm²) and 42 tiles kept (minimum 100)" in lines[0]
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    args = [
        "score",
        str(cmu_svs),
        "--out",
        str(out),
        "--quiet",
        "--allow-inadequate",
        "--risk-model",
        str(CLINICAL_MODEL),
        "--age",
        "67",
        "--tumour-size",
        "2.1",
        "--grade",
        "3",
        "--er",
        "positive",
        "--nodes",
        "2",
        "--specimen-type",
        "frozen",
        "--repeats",
        "3",
    ]
    result = cli(args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "result.json").read_text())
    validate_result(doc)
    items = {item["item"]: item["text"] for item in doc["model_card"]}
    assert items["10/21"].startswith("n = 198, 51 events") and items["1-4"] == "to be supplied by the user"
    assert "age (continuous)" in items["9"] and "grade: 2 imputed with 2" in items["11"]
    codes = doc["qc"]["codes"]
    assert {"inadequate-specimen", "outside-population", "specimen-not-developed"} <= set(codes)
    clinical = doc["clinical"]
    assert clinical["model_covariates"] == ["age", "size_cm", "grade", "er[positive]"]
    total = clinical["genomic_linear_predictor"] + clinical["clinical_linear_predictor"]
    assert total == pytest.approx(doc["risk"]["linear_predictor"])
    page_one = PdfReader(io.BytesIO((out / "report.pdf").read_bytes())).pages[0].extract_text()
    for text in (
        "Inadequate specimen",
        "outside the population",
        "frozen specimen",
        "Clinical values",
        "Repeatability",
    ):
        assert text in page_one


def test_adequacy_minimums_come_from_the_user_then_the_bundle_then_the_defaults() -> None:
    from sequoia_clinic.bundles.manifest import SpecimenMinimums
    from sequoia_clinic.pipeline.clinical import DEFAULT_ADEQUACY, AdequacyRequest, adequacy_rule

    declared = SpecimenMinimums(min_tissue_mm2=10.0, min_tiles=250, rationale="biopsy-free resections")
    assert adequacy_rule(None, AdequacyRequest()) == DEFAULT_ADEQUACY
    rule = adequacy_rule(declared, AdequacyRequest())
    assert (rule.min_tissue_mm2, rule.min_tiles, rule.rationale) == (10.0, 250, "biopsy-free resections")
    rule = adequacy_rule(declared, AdequacyRequest(min_tiles=50))
    assert (rule.min_tissue_mm2, rule.min_tiles) == (10.0, 50)


def test_the_demo_bundle_declares_its_adequacy_minimums(demo_bundle) -> None:
    assert demo_bundle.adequacy is not None
    assert (demo_bundle.adequacy.min_tissue_mm2, demo_bundle.adequacy.min_tiles) == (4.0, 100)
