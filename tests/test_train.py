"""`train`: folds, expression tables, checkpoint selection, determinism, kill-and-resume, fine-tuning, and a
synthetic cohort with planted correlations whose trained bundle runs through verify, predict and score.

The small ViS used here (documented in README "Training and evaluation"): input 64 (the demo encoder's
width), 100 cluster tokens, depth 1, 2 heads, 16-d local/summary/output mixers; recipe AdamW lr 3e-3,
batch 32, at most 30 epochs, patience 8, loss+corr selection. Training runs on one CPU thread (restored
afterwards): on 2 shared cores the small model is faster so, and identical-weights checks hold per thread
count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.linear_model import RidgeCV
from synthetic_cohort import LEVELS, SMALL_VIS, make_cohort, settings_for, write_cohort

from sequoia_clinic.aggregator.ensemble import load_fold
from sequoia_clinic.bundles.store import load_bundle
from sequoia_clinic.errors import OptionError, TableError
from sequoia_clinic.evaluation.io import read_predictions
from sequoia_clinic.evaluation.stats import correlation
from sequoia_clinic.pipeline.features import read_reference_h5
from sequoia_clinic.pipeline.train import TrainRequest, train_bundle
from sequoia_clinic.settings import Device
from sequoia_clinic.signatures.mapping import load_mapper
from sequoia_clinic.signatures.registry import get_signature
from sequoia_clinic.training.checkpoint import SelectionState
from sequoia_clinic.training.data import Recipe, Selection
from sequoia_clinic.training.expression import Transform, read_expression
from sequoia_clinic.training.folds import Fold, check_folds, patient_kfold, read_splits, restrict, splits_json
from sequoia_clinic.training.loop import select

RECIPE = Recipe(lr=3e-3, batch_size=32, max_epochs=30, patience=8)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def request_for(manifest: Path, expression: Path, out: Path, **changes) -> TrainRequest:
    base = TrainRequest(manifest, expression, out, Transform.NONE, config=SMALL_VIS, recipe=RECIPE)
    return replace(base, **changes)


# ---- the planted-correlation run (shared by several tests) ----------------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, user_cache: Path):
    cohort = make_cohort(n_patients=300, genes_per_level=20, seed=0)
    folder = tmp_path_factory.mktemp("planted")
    manifest, expression = write_cohort(cohort, folder)
    outcome = train_bundle(
        request_for(manifest, expression, folder / "brca-synthetic"), settings_for(user_cache)
    )
    return cohort, outcome, folder


@pytest.mark.slow
def test_planted_correlations_are_recovered_and_match_a_ridge_reference(planted):
    cohort, outcome, folder = planted
    oof = read_predictions(folder / "brca-synthetic" / "oof.parquet").predictions
    assert oof.slide_ids == tuple(cohort.slide_ids)  # every slide predicted once, out of fold
    r = correlation(cohort.targets(), oof.values[:, [oof.genes.index(g) for g in cohort.genes]])
    medians = {level: float(np.median(r[cohort.rho == level])) for level in LEVELS}
    assert list(medians.values()) == sorted(medians.values())  # rises with the planted value
    assert medians[0.5] >= 0.4 and medians[0.8] >= 0.7
    assert np.mean(r[cohort.rho >= 0.5] >= 0.4) >= 0.75
    assert abs(medians[0.0]) < 0.1  # null genes stay near 0

    # Ridge on mean-pooled features, same folds (training + validation patients): the sanity reference.
    pooled = cohort.features.mean(axis=1)
    ridge = np.zeros_like(cohort.targets())
    patients = np.asarray(cohort.patients)
    for fold in outcome.folds:
        train = np.isin(patients, fold.train + fold.val)
        test = np.isin(patients, fold.test)
        model = RidgeCV(alphas=np.logspace(-2, 4, 25)).fit(pooled[train], cohort.targets()[train])
        ridge[test] = model.predict(pooled[test])
    r_ridge = correlation(cohort.targets(), ridge)
    planted_genes = cohort.rho > 0
    assert np.median(r[planted_genes]) >= 0.8 * np.median(r_ridge[planted_genes])


def test_test_predictions_equal_a_reload_of_the_chosen_checkpoint(planted):
    cohort, outcome, folder = planted
    bundle_dir = folder / "brca-synthetic"
    oof = read_predictions(bundle_dir / "oof.parquet").predictions
    bundle = load_bundle(bundle_dir, settings_for(folder), generate=False)
    for fold_ref, fold, run in zip(bundle.folds, outcome.folds, outcome.run.folds, strict=True):
        model = load_fold(
            "vis", bundle.aggregator_config, bundle.file(fold_ref.weights), fold_ref.weights.sha256
        )
        rows = [i for i, p in enumerate(cohort.patients) if p in set(fold.test)]
        with torch.inference_mode():
            again = model(torch.from_numpy(cohort.features[rows])).numpy()
        np.testing.assert_allclose(oof.values[rows], again, rtol=0, atol=2e-5)
        assert np.all(oof.folds[rows] == fold.index)
        # the bundle's fold is the chosen epoch, recorded as such
        history = [h for h in run.history if h.chosen]
        assert history[-1].epoch == run.best_epoch
        assert run.best_epoch <= run.epochs_run
    training = json.loads((bundle_dir / "manifest.json").read_text())["provenance"]["training"]
    assert training["best_epochs"] == [o.best_epoch for o in outcome.run.folds]
    assert any(o.best_epoch < o.epochs_run for o in outcome.run.folds)  # the last epoch is not what is kept


def test_training_outputs_and_bundle_record(planted):
    cohort, outcome, folder = planted
    out = folder / "brca-synthetic"
    names = {p.name for p in out.iterdir()}
    assert {"manifest.json", "genes.csv", "folds", "oof.parquet", "baseline_untrained.parquet"} <= names
    assert {"baseline_train_mean.parquet", "epochs.csv", "training_curves.png", "splits.json"} <= names
    assert "checkpoints" not in names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trained"] is True
    assert manifest["encoder"]["name"] == "demo-vit"
    training = manifest["provenance"]["training"]
    assert training["n_patients"] == 300 and training["n_slides"] == len(cohort.slide_ids)
    assert training["recipe"]["lr"] == RECIPE.lr and training["recipe"]["selection"] == "loss+corr"
    assert training["folds"]["k"] == 5 and training["expression"]["transform"] == "none"
    assert training["features"]["sources"] == {"reference-h5": len(cohort.slide_ids)}
    epochs = pd.read_csv(out / "epochs.csv")
    assert set(epochs["fold"]) == set(range(5)) and epochs["chosen"].any()
    # the training-mean baseline is the training slides' mean, fold by fold
    mean = read_predictions(out / "baseline_train_mean.parquet").predictions
    fold0 = outcome.folds[0]
    train_rows = [i for i, p in enumerate(cohort.patients) if p in set(fold0.train)]
    row = [i for i, f in enumerate(mean.folds) if f == 0][0]
    np.testing.assert_allclose(mean.values[row], cohort.targets()[train_rows].mean(axis=0), rtol=1e-5)
    splits = read_splits(out / "splits.json")
    assert splits == outcome.folds


@pytest.mark.slow
def test_trained_bundle_runs_through_verify_predict_evaluate_score_calibrate(
    planted, cli, cmu_svs, tmp_path, gse7390_table
):
    """The trained bundle is accepted by `models verify`, `predict` and `score`; once `evaluate` stored its
    evaluation, the report shows each signature gene's cross-validated r and the page-1 count, and
    `calibrate --reliable-genes-only` keeps only the reliable genes."""
    from pypdf import PdfReader

    cohort, _, folder = planted
    bundle = folder / "brca-synthetic"
    verified = cli(["models", "verify", bundle])
    assert verified.exit_code == 0, verified.output
    predicted = cli(["predict", cmu_svs, "--bundle", bundle, "--out", tmp_path / "p.csv", "-q"])
    assert predicted.exit_code == 0, predicted.output
    row = pd.read_csv(tmp_path / "p.csv")
    assert bool(row["bundle_trained"][0]) and set(cohort.genes) <= set(row.columns)

    evaluated = cli(
        ["evaluate", "--bundle", bundle, "--predictions", bundle / "oof.parquet"]
        + ["--expression", folder / "expression.csv", "--out", tmp_path / "eval"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    genes = pd.read_parquet(tmp_path / "eval" / "genes.parquet").set_index("gene")
    assert cli(["models", "verify", bundle]).exit_code == 0

    scored = cli(
        ["score", cmu_svs, "--bundle", bundle, "--out", tmp_path / "report", "-q", "--allow-inadequate"]
    )
    assert scored.exit_code == 0, scored.output
    result = json.loads((tmp_path / "report" / "result.json").read_text())
    rows = result["signature"]["genes"]
    for entry in rows:
        assert entry["cv_r"] == pytest.approx(genes.loc[entry["gene"], "r"], abs=1e-9)
        assert entry["reliable"] == bool(genes.loc[entry["gene"], "passes_strict"])
    reliable = [entry["gene"] for entry in rows if entry["reliable"]]
    assert 0 < len(reliable) < len(rows)
    assert result["signature"]["reliability"]["reliable"] == len(reliable)
    page_one = PdfReader(tmp_path / "report" / "report.pdf").pages[0].extract_text()
    assert f"{len(reliable)} of the signature's {len(rows)} genes" in " ".join(page_one.split())

    table = tmp_path / "gse7390.csv"
    gse7390_table.to_csv(table, index=False)
    out = tmp_path / "risk.json"
    args = [
        "calibrate",
        table,
        "--signature",
        "wang76",
        "--time-col",
        "time_days",
        "--event-col",
        "dmfs_event",
    ]
    args += ["--time-unit", "days", "--out", out, "--cv-repeats", "1", "--bootstrap", "10", "--no-card"]
    calibrated = cli([*args, "--reliable-genes-only", "--bundle", bundle])
    assert calibrated.exit_code == 0, calibrated.output
    model = json.loads(out.read_text())
    assert sorted(model["genes"]) == sorted(
        g for g in get_signature("wang76").genes if genes.loc[g, "passes_strict"]
    )
    refused = cli([*args, "--reliable-genes-only"])
    assert refused.exit_code == 2 and "--bundle" in refused.stderr


# ---- folds ------------------------------------------------------------------------------------------------
def test_patient_kfold_has_disjoint_test_folds_covering_every_patient():
    patients = [f"P{i}" for i in range(103)] * 2  # two slides each: grouping is by patient
    folds = patient_kfold(patients, k=5, seed=0)
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == set(patients)
    assert sum(len(t) for t in tests) == 103  # no patient in two test folds
    for fold in folds:
        assert not set(fold.train) & set(fold.val) and not (set(fold.train) | set(fold.val)) & set(fold.test)
        assert len(fold.val) == pytest.approx(0.1 * (len(fold.train) + len(fold.val)), abs=1)
    check_folds(folds)
    assert patient_kfold(patients, 5, 0) == folds and patient_kfold(patients, 5, 1) != folds


def test_splits_file_round_trip_restrict_and_refusals(tmp_path):
    folds = patient_kfold([f"P{i}" for i in range(40)], k=4, seed=3)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(splits_json(folds)))
    assert read_splits(path) == folds
    fewer = restrict(folds, [f"P{i}" for i in range(30)])
    assert all(set(f.test) <= {f"P{i}" for i in range(30)} for f in fewer)
    twice = folds[0].test[0]
    train = tuple(p for p in folds[1].train if p != twice)
    val = tuple(p for p in folds[1].val if p != twice)
    overlapping = (folds[0], Fold(1, train, val, folds[1].test + (twice,)))
    with pytest.raises(TableError, match="test sets of folds 0 and 1"):
        check_folds(overlapping)
    with pytest.raises(TableError, match="no test patients"):
        check_folds((Fold(0, ("a",), ("b",), ()),))


# ---- expression tables -----------------------------------------------------------------------------------
def test_reference_table_aliases_duplicates_transform(tmp_path):
    frame = pd.DataFrame(
        {
            "wsi_file_name": ["S1.svs", "S2.svs", "S3.svs"],
            "patient_id": ["A", "A", "B"],
            "rna_GOLPH2": [1.0, 3.0, 7.0],  # old symbol of GOLM1
            "rna_GOLM1": [3.0, 5.0, 9.0],  # the same gene under its current symbol: averaged
            "rna_ESR1": [0.0, 1.0, 3.0],
            "rna_FLAT": [2.0, 2.0, 2.0],
        }
    )
    path = tmp_path / "ref.csv"
    frame.to_csv(path, index=False)
    table = read_expression(path, Transform.LOG2P1, load_mapper())
    assert table.keyed_by == "slide" and table.slide_ids == ("S1.svs", "S2.svs", "S3.svs")
    assert table.genes == ("GOLM1", "ESR1", "FLAT")
    np.testing.assert_allclose(table.values[:, 0], (np.log2([2, 4, 8]) + np.log2([4, 6, 10])) / 2)
    np.testing.assert_allclose(table.values[:, 1], np.log2([1, 2, 4]))
    assert table.handling.renamed == (("GOLPH2", "GOLM1"),)
    assert table.handling.merged == (("GOLM1", ("rna_GOLPH2", "rna_GOLM1")),)
    frame.loc[0, "rna_ESR1"] = -1.0
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match="negative values"):
        read_expression(path, Transform.LOG2P1, load_mapper())


def test_real_reference_file_reads(tmp_path):
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "sequoia" / "ref_file_example.csv"
    if not shared.exists():
        pytest.skip("needs ../shared/data/sequoia/ref_file_example.csv")
    table = read_expression(shared, Transform.NONE, load_mapper())
    assert table.keyed_by == "slide" and len(table.slide_ids) == 5 and len(table.genes) == 20820


# ---- selection, determinism, resume, fine-tuning --------------------------------------------------------
def test_loss_corr_selection_checks_both_loss_and_correlation():
    recipe = Recipe(delta=0.5)
    state = SelectionState()
    # (val loss, val r) per epoch
    epochs = [(5.0, 0.1), (3.0, 0.2), (3.2, 0.3), (4.0, 0.9), (2.0, 0.25), (2.4, 0.28), (1.0, 0.1)]
    chosen = [select(state, loss, r, recipe) for loss, r in epochs]
    # epoch 4 has the best r but its loss is 1.0 above the best: never chosen (the reference would save it);
    # epoch 5 sets a new best loss, so epoch 3 (loss 3.2 > 2.0 + 0.5) falls out and epoch 5 replaces it;
    # epoch 7's loss 1.0 makes epoch 6 (2.4) fall out: epoch 7 is chosen despite its lower r.
    assert chosen == [True, True, True, False, True, True, True]
    state = SelectionState()
    assert [select(state, loss, r, Recipe(selection=Selection.LOSS)) for loss, r in epochs] == [
        True, True, False, False, True, False, True,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory: pytest.TempPathFactory):
    cohort = make_cohort(n_patients=80, genes_per_level=4, seed=5)
    folder = tmp_path_factory.mktemp("small")
    manifest, expression = write_cohort(cohort, folder)
    return cohort, manifest, expression, folder


SMALL_RECIPE = Recipe(lr=3e-3, batch_size=16, max_epochs=5, patience=5)


def small_request(small_cohort, out: Path, **changes) -> TrainRequest:
    _, manifest, expression, _ = small_cohort
    return request_for(manifest, expression, out, **{"folds": 3, "recipe": SMALL_RECIPE, **changes})


def fold_weights(out: Path) -> list[dict[str, torch.Tensor]]:
    return [load_file(str(p)) for p in sorted((out / "folds").glob("fold-*.safetensors"))]


def same_weights(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


def test_same_seed_same_weights_and_kill_then_resume_gives_the_same_weights(small_cohort, user_cache):
    folder = small_cohort[3]
    settings = settings_for(user_cache)
    first = train_bundle(small_request(small_cohort, folder / "run-a"), settings)
    again = train_bundle(small_request(small_cohort, folder / "run-b"), settings)
    assert same_weights(fold_weights(folder / "run-a"), fold_weights(folder / "run-b"))
    assert first.training_id == again.training_id
    other_seed = train_bundle(
        small_request(small_cohort, folder / "run-c", recipe=replace(SMALL_RECIPE, seed=7)), settings
    )
    assert not same_weights(fold_weights(folder / "run-a"), fold_weights(folder / "run-c"))
    assert other_seed.training_id != first.training_id

    class Killed(Exception):
        pass

    def kill_in_fold_1(record):
        if record.fold == 1 and record.epoch == 3:
            raise Killed

    for every in (1, 2):  # with a checkpoint every epoch, and every 2 epochs (epochs 3 is then redone)
        out = folder / f"run-killed-{every}"
        request = small_request(small_cohort, out, checkpoint_every=every)
        with pytest.raises(Killed):
            train_bundle(request, settings, on_epoch=kill_in_fold_1)
        assert (out / "checkpoints" / "fold-0" / "done.json").is_file()
        assert not (out / "manifest.json").exists()
        with pytest.raises(OptionError, match="not empty"):
            train_bundle(request, settings)
        train_bundle(replace(request, resume=True), settings)
        assert same_weights(fold_weights(folder / "run-a"), fold_weights(out))
        oof_a = pd.read_parquet(folder / "run-a" / "oof.parquet")
        pd.testing.assert_frame_equal(oof_a, pd.read_parquet(out / "oof.parquet"))


def test_resume_refuses_other_inputs_and_missing_checkpoints(small_cohort, user_cache):
    folder = small_cohort[3]
    settings = settings_for(user_cache)
    with pytest.raises(OptionError, match="no training checkpoints"):
        train_bundle(small_request(small_cohort, folder / "nothing-here", resume=True), settings)
    out = folder / "run-changed"

    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_bundle(small_request(small_cohort, out), settings, on_epoch=stop)
    with pytest.raises(OptionError, match="other data, folds, model or recipe"):
        train_bundle(small_request(small_cohort, out, resume=True, fold_seed=4), settings)


def test_init_from_keeps_or_replaces_the_head(small_cohort, user_cache):
    cohort, manifest, expression, folder = small_cohort
    settings = settings_for(user_cache)
    base = folder / "run-a"
    if not base.exists():
        train_bundle(small_request(small_cohort, base), settings)
    start = fold_weights(base)
    tuned = train_bundle(
        small_request(
            small_cohort, folder / "tuned", init_from=base, config={}, recipe=Recipe(lr=1e-9, max_epochs=1)
        ),
        settings,
    )
    assert tuned.summary["init_from"]["same_genes"] is True
    after = fold_weights(folder / "tuned")
    for a, b in zip(start, after, strict=True):  # lr 1e-9, one epoch: the weights barely move, head included
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6

    fewer = cohort.expression.drop(columns=cohort.genes[-3:])
    fewer_path = folder / "fewer.csv"
    fewer.to_csv(fewer_path, index=False)
    new_head = train_bundle(
        replace(
            small_request(
                small_cohort,
                folder / "new-head",
                init_from=base,
                config={},
                recipe=Recipe(lr=1e-9, max_epochs=1),
            ),
            expression=fewer_path,
        ),
        settings,
    )
    assert new_head.summary["init_from"]["same_genes"] is False
    weights = fold_weights(folder / "new-head")[0]
    assert weights["linear_head.1.weight"].shape[0] == len(cohort.genes) - 3
    assert torch.allclose(weights["pos_emb1D"], start[0]["pos_emb1D"], atol=1e-6)


def test_he2rna_trains(small_cohort, user_cache):
    folder = small_cohort[3]
    outcome = train_bundle(
        small_request(
            small_cohort,
            folder / "he2rna",
            aggregator="he2rna",
            config={"layers": [32, 32]},
            recipe=Recipe(max_epochs=2),
        ),
        settings_for(user_cache),
    )
    assert outcome.bundle.aggregator == "he2rna" and len(outcome.bundle.folds) == 3


def test_reference_h5_rows_that_are_not_finite_are_filled(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    values[2] = np.nan
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as handle:
        handle["cluster_features"] = values
    read, filled = read_reference_h5(path, 4, 3)
    assert filled == 1
    np.testing.assert_allclose(read[2], values[[0, 1, 3]].mean(axis=0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_runs_on_cuda(small_cohort, user_cache):
    folder = small_cohort[3]
    settings = replace(settings_for(user_cache), device=Device.CUDA)
    outcome = train_bundle(
        small_request(small_cohort, folder / "cuda", recipe=replace(SMALL_RECIPE, max_epochs=2)), settings
    )
    assert outcome.summary["device"].startswith("cuda")
    assert outcome.summary["precision"] == (
        "bf16 autocast" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    )
    oof = read_predictions(folder / "cuda" / "oof.parquet").predictions
    assert np.isfinite(oof.values).all() and len(oof.patients) == len(small_cohort[0].slide_ids)
