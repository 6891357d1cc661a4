"""`evaluate`: the per-gene statistics against independent computations (scipy, statsmodels or scipy's BH,
Steiger's formula written out here), the reference rule reproduced gene by gene, the pseudo-replication
effect of counting slides, and the command end to end on a trained synthetic bundle."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.metrics import root_mean_squared_error
from synthetic_cohort import SMALL_VIS, make_cohort, settings_for, write_cohort

from sequoia_clinic.bundles.reliability import read_reliability
from sequoia_clinic.bundles.store import load_bundle, verify_bundle
from sequoia_clinic.evaluation.align import Measured, Predictions, Unit, align
from sequoia_clinic.evaluation.genes import evaluate_genes
from sequoia_clinic.evaluation.rules import Rule
from sequoia_clinic.evaluation.stats import benjamini_hochberg, pearson, rmse, steiger
from sequoia_clinic.pipeline.train import TrainRequest, train_bundle
from sequoia_clinic.training.data import Recipe
from sequoia_clinic.training.expression import Transform

try:
    from statsmodels.stats.multitest import fdrcorrection as _statsmodels_bh
except ImportError:  # statsmodels is not a dependency: scipy's BH is the independent reference then
    _statsmodels_bh = None


def reference_bh(p: np.ndarray) -> np.ndarray:
    if _statsmodels_bh is not None:
        return _statsmodels_bh(p)[1]
    return stats.false_discovery_control(p, method="bh")


def williams_t(xy: float, xz: float, yz: float, n: int) -> float:
    """Steiger (1980), eq. 7: Williams' T2 for H0: rho_xy = rho_xz, written out for one gene."""
    determinant = 1 - xy * xy - xz * xz - yz * yz + 2 * xy * xz * yz
    r_bar = (xy + xz) / 2
    return (xy - xz) * math.sqrt(
        (n - 1) * (1 + yz) / (2 * (n - 1) / (n - 3) * determinant + r_bar * r_bar * (1 - yz) ** 3)
    )


@pytest.fixture(scope="module")
def fixed_set():
    """A fixed prediction set: 60 units x 300 genes with a range of true correlations and a baseline."""
    rng = np.random.default_rng(11)
    n, g = 60, 300
    measured = rng.normal(5, 1, size=(n, g))
    strength = np.linspace(0, 0.9, g)
    predicted = strength * measured + rng.normal(0, 1, size=(n, g))
    baseline = 0.1 * measured + rng.normal(0, 0.3, size=(n, g)) + 0.2
    return measured, predicted, baseline


def test_pearson_rmse_steiger_and_bh_equal_independent_computations(fixed_set):
    measured, predicted, baseline = fixed_set
    n, g = measured.shape
    r, p = pearson(measured, predicted)
    expected = np.array([stats.pearsonr(measured[:, j], predicted[:, j]) for j in range(g)])
    np.testing.assert_allclose(r, expected[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(p, expected[:, 1], rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(
        rmse(predicted, measured),
        [root_mean_squared_error(measured[:, j], predicted[:, j]) for j in range(g)],
        rtol=1e-12,
    )
    xz, _ = pearson(measured, baseline)
    yz, _ = pearson(predicted, baseline)
    result = steiger(r, xz, yz, n)
    t_expected = np.array([williams_t(r[j], xz[j], yz[j], n) for j in range(g)])
    np.testing.assert_allclose(result.t, t_expected, rtol=1e-9)
    np.testing.assert_allclose(result.p_signed, [stats.t.sf(t, n - 3) for t in t_expected], rtol=1e-9)
    np.testing.assert_allclose(
        result.p_abs, [1 - stats.t.cdf(abs(t), n - 3) for t in t_expected], rtol=1e-9, atol=1e-15
    )
    # signed: the p for "model better" is near 1 where the model is worse (the reference's |t| p is not)
    worse = result.t < 0
    assert worse.any() and np.all(result.p_signed[worse] > 0.5)
    np.testing.assert_allclose(benjamini_hochberg(p), reference_bh(p), rtol=1e-12)
    with_nan = p.copy()
    with_nan[:5] = np.nan
    finite = np.isfinite(with_nan)
    np.testing.assert_allclose(
        benjamini_hochberg(with_nan)[finite], reference_bh(with_nan[finite]), rtol=1e-12
    )


def reference_rule(measured, predicted, baseline) -> np.ndarray:
    """The reference evaluate_model.py rule, re-done gene by gene with scipy (NaN r -> 0, NaN p -> 1)."""
    n, g = measured.shape
    rows = []
    for j in range(g):
        x, y, z = measured[:, j], predicted[:, j], baseline[:, j]
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            xy, p1 = 0.0, 1.0
        else:
            xy, p1 = stats.pearsonr(x, y)
        xz = stats.pearsonr(x, z)[0] if np.ptp(z) > 0 and np.ptp(x) > 0 else 0.0
        yz = stats.pearsonr(y, z)[0] if np.ptp(z) > 0 and np.ptp(y) > 0 else 0.0
        t2 = williams_t(xy, xz, yz, n)
        rows.append((xy, p1, xz, 1 - stats.t.cdf(abs(t2), n - 3)))
    xy, p1, xz, steiger_p = (np.array(c) for c in zip(*rows, strict=True))
    q = reference_bh(np.nan_to_num(steiger_p, nan=1.0))
    rmse_pred = np.sqrt(((predicted - measured) ** 2).mean(axis=0))
    rmse_random = np.sqrt(((baseline - measured) ** 2).mean(axis=0))
    return (xy > 0) & (p1 < 0.05) & (rmse_pred < rmse_random) & (xy > xz) & (steiger_p < 0.05) & (q < 0.2)


def test_sequoia_rule_is_the_reference_rule_gene_by_gene(fixed_set):
    measured, predicted, baseline = fixed_set
    measured = measured.copy()
    measured[:, 7] = 3.0  # a constant gene: r = 0, p = 1, never passes
    genes = tuple(f"G{j}" for j in range(measured.shape[1]))
    units = tuple(f"P{i}" for i in range(measured.shape[0]))
    aligned = align(
        Predictions(units, None, None, genes, predicted),
        Measured(units, None, genes, measured),
        Unit.PATIENT,
        Predictions(units, None, None, genes, baseline),
    )
    table = evaluate_genes(aligned, Rule.SEQUOIA).table
    expected = reference_rule(measured, predicted, baseline)
    assert 20 < expected.sum() < len(genes) - 20  # the set tests both outcomes
    np.testing.assert_array_equal(table["passes_sequoia"].to_numpy(dtype=bool), expected)
    assert not table.loc[7, "passes_sequoia"] and not table.loc[7, "passes_strict"]
    q = reference_bh(np.nan_to_num(table["p"].to_numpy(), nan=1.0))
    np.testing.assert_array_equal(table["passes_strict"], (table["r"].fillna(0) >= 0.3) & (q < 0.05))


def null_cohort(seed: int = 1, n: int = 529, g: int = 2000):
    """Null genes (no signal), as in training.md §1.14: shrunk predictions, an untrained baseline with a
    per-gene offset; every patient's slides are near-identical duplicates (two slides each)."""
    rng = np.random.default_rng(seed)
    patients = tuple(f"P{i:04d}" for i in range(n))
    measured = rng.normal(5, 1, size=(n, g))
    predicted = rng.normal(5, 0.5, size=(n, g))
    untrained = rng.normal(0, 0.3, size=(n, g)) + rng.normal(0, 1, size=g)
    slide_patients = tuple(p for p in patients for _ in range(2))
    slide_ids = tuple(f"{p}-{k}" for p in patients for k in range(2))
    jitter = rng.normal(0, 0.01, size=(2 * n, g))
    genes = tuple(f"G{j}" for j in range(g))
    folds = np.array([i % 5 for i in range(n) for _ in range(2)])
    pred = Predictions(slide_patients, slide_ids, folds, genes, np.repeat(predicted, 2, axis=0) + jitter)
    base = Predictions(slide_patients, slide_ids, folds, genes, np.repeat(untrained, 2, axis=0) + jitter)
    return pred, base, Measured(patients, None, genes, measured)


def test_null_genes_rarely_pass_per_patient_and_pseudo_replication_inflates_per_slide():
    pred, base, measured = null_cohort()
    per_patient = evaluate_genes(align(pred, measured, Unit.PATIENT, base), Rule.SEQUOIA)
    per_slide = evaluate_genes(align(pred, measured, Unit.SLIDE, base), Rule.SEQUOIA)
    g = len(pred.genes)
    share_patient = per_patient.summary.passing["sequoia"] / g
    share_slide = per_slide.summary.passing["sequoia"] / g
    assert per_patient.summary.protocol.n_units == 529 and per_slide.summary.protocol.n_units == 1058
    assert share_patient <= 0.01
    assert share_slide > 2 * share_patient and share_slide >= 0.02  # duplicated slides look like evidence
    assert per_patient.summary.passing["strict"] == 0


def test_patient_unit_averages_slides_and_per_fold_r():
    rng = np.random.default_rng(3)
    genes = ("A", "B", "C")
    patients = ("p1", "p1", "p2", "p3", "p4", "p5", "p6", "p7")
    slides = tuple(f"s{i}" for i in range(8))
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    values = rng.normal(size=(8, 3))
    measured = Measured(tuple(sorted(set(patients))), None, genes, rng.normal(size=(7, 3)))
    aligned = align(Predictions(patients, slides, folds, genes, values), measured, Unit.PATIENT)
    assert aligned.unit_ids == ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
    np.testing.assert_allclose(aligned.predicted[0], values[:2].mean(axis=0))
    table = evaluate_genes(aligned).table
    fold1 = aligned.folds == 1
    expected = [stats.pearsonr(aligned.measured[fold1, j], aligned.predicted[fold1, j])[0] for j in range(3)]
    np.testing.assert_allclose(table["r_fold1"], expected, atol=1e-12)
    assert table["passes_sequoia"].isna().all()  # no baseline: not evaluated, never a silent False


@pytest.fixture(scope="module")
def trained_small(tmp_path_factory: pytest.TempPathFactory, user_cache: Path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cohort = make_cohort(n_patients=90, genes_per_level=4, seed=8)
        folder = tmp_path_factory.mktemp("evaluate")
        manifest, expression = write_cohort(cohort, folder)
        recipe = Recipe(lr=3e-3, batch_size=16, max_epochs=4, patience=4)
        request = TrainRequest(
            manifest, expression, folder / "bundle", Transform.NONE, config=SMALL_VIS, recipe=recipe, folds=3
        )
        train_bundle(request, settings_for(user_cache))
    finally:
        torch.set_num_threads(before)
    return cohort, folder


def test_evaluate_command_writes_outputs_and_stores_in_the_bundle(trained_small, cli):
    cohort, folder = trained_small
    bundle = folder / "bundle"
    out = folder / "eval"
    args = ["evaluate", "--bundle", bundle, "--predictions", bundle / "oof.parquet"]
    result = cli([*args, "--expression", folder / "expression.csv", "--out", out])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {
        "genes.csv",
        "genes.parquet",
        "summary.json",
        "r_histogram.png",
        "top_genes.png",
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["unit"] == "patient" and summary["protocol"]["n_units"] == 90
    assert summary["inputs"]["transform"] == "none"  # taken from the bundle
    assert summary["stored_in_bundle"] is True
    genes = pd.read_csv(out / "genes.csv")
    assert set(genes["gene"]) == set(cohort.genes)
    loaded = load_bundle(bundle, settings_for(folder), generate=False)
    assert loaded.evaluation is not None and loaded.evaluation.n_units == 90
    assert verify_bundle(loaded).ok
    reliability = read_reliability(loaded)
    assert reliability is not None
    first = genes.iloc[0]
    assert reliability.of(first["gene"]) == (pytest.approx(first["r"]), bool(first["passes_strict"]))

    # a second evaluation replaces the first (content-addressed file, old one removed)
    again = cli(
        [*args, "--expression", folder / "expression.csv", "--out", folder / "eval-slide", "--unit", "slide"]
    )
    assert again.exit_code == 0, again.output
    files = sorted(p.name for p in bundle.glob("evaluation-*.parquet"))
    assert (
        len(files) == 1
        and load_bundle(bundle, settings_for(folder), generate=False).evaluation.unit == "slide"
    )


def test_predictions_of_another_run_are_evaluated_but_not_stored(trained_small, cli, tmp_path):
    cohort, folder = trained_small
    frame = pd.read_parquet(folder / "bundle" / "oof.parquet")
    foreign = tmp_path / "external.parquet"
    frame.to_parquet(foreign)  # no training id in the metadata
    out = tmp_path / "eval"
    result = cli(
        [
            "evaluate",
            "--bundle",
            folder / "bundle",
            "--predictions",
            foreign,
            "--expression",
            folder / "expression.csv",
            "--out",
            out,
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stored_in_bundle"] is False and "training ids differ" in summary["not_stored_because"]
    assert summary["genes_passing"]["sequoia"] is None  # no baseline beside it
