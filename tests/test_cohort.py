"""``sequoia-clinic cohort``: a fixture cohort of 24 slides scored in-process, on a LocalCluster, in three
shards and on a cluster losing a worker; resume; survival figures against lifelines / scikit-survival.

The fixture cohort: 21 small JPEG TIFFs cut (and flipped) from the CMU demo slide's real pixels, the demo
slide itself, a truncated copy of it, and a "poison" slide (another real-pixel TIFF) whose child process
SIGKILLs itself through the worker's documented test hook (``SEQUOIA_CLINIC_TEST_POISON_SHA256``). Rows
carry GSE7390 follow-up times (days) and events. The risk model is the shipped wang76 model with its
cut-offs moved to the tertiles of this cohort's linear predictors (computed here with ``predict_slide``),
so that the stratification has three groups (the untrained demo bundle puts every slide in one group of
the shipped model).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_jpeg_pyramid

from sequoia_clinic.pipeline.cohort_store import AttemptEntry, AttemptStatus, CohortStore
from sequoia_clinic.pipeline.cohort_table import RUN_COLUMNS, TIMING_PREFIX
from sequoia_clinic.pipeline.cohort_worker import POISON_ENV

MAX_TILES = 16
N_SYNTHETIC = 21
CROP = 1024


@dataclass(frozen=True)
class FixtureCohort:
    folder: Path
    manifest: Path
    model: Path
    good: tuple[str, ...]  # slide_ids that must be scored
    truncated: str
    poison: str
    poison_sha256: str
    expression: dict[str, np.ndarray]  # slide_id -> predict_slide's expression (independent of cohort)


def _crop(pixels: np.ndarray, i: int) -> np.ndarray:
    """A 1024 px tissue crop of CMU (the slide is 2220 px wide, 2967 px high), flipped by index."""
    y0 = 150 + (i % 7) * 230
    x0 = 200 + (i // 7) * 300 + (i % 7) * 15
    crop = pixels[y0 : y0 + CROP, x0 : x0 + CROP]
    if i % 2:
        crop = crop[::-1]
    if i % 3 == 1:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


@pytest.fixture(scope="module")
def cohort(
    tmp_path_factory: pytest.TempPathFactory,
    cmu_pixels: np.ndarray,
    cmu_svs: Path,
    gse7390_table: pd.DataFrame,
    user_cache: Path,
) -> Iterator[FixtureCohort]:
    import torch

    from sequoia_clinic.bundles.store import load_bundle
    from sequoia_clinic.locations import weights_cache_dir
    from sequoia_clinic.pipeline.predict import PredictRequest, load_folds, run_prediction
    from sequoia_clinic.pipeline.score import DEFAULT_RISK_MODEL
    from sequoia_clinic.settings import FeatureSettings, ModelSettings, Settings
    from sequoia_clinic.survival.model import RiskModel

    folder = tmp_path_factory.mktemp("cohort")
    slides: list[tuple[str, str]] = []  # (slide as written in the manifest, slide_id)
    for i in range(N_SYNTHETIC):
        write_jpeg_pyramid(folder / f"crop{i:02d}.tif", [_crop(cmu_pixels, i)], 0.5)
        slides.append((f"crop{i:02d}.tif", f"crop{i:02d}"))
    slides.append((str(cmu_svs), "cmu-demo"))
    data = cmu_svs.read_bytes()
    (folder / "truncated.svs").write_bytes(data[: len(data) // 3])
    slides.append(("truncated.svs", "truncated"))
    poison = write_jpeg_pyramid(folder / "poison.tif", [_crop(cmu_pixels, 40)[::-1, ::-1].copy()], 0.5)
    slides.append(("poison.tif", "poison"))

    # Outcomes: 12 GSE7390 patients with an event and 12 without, in table order.
    events = gse7390_table[gse7390_table["dmfs_event"] == 1].head(12)
    censored = gse7390_table[gse7390_table["dmfs_event"] == 0].head(12)
    outcome = pd.concat([events, censored]).sort_index()
    manifest = pd.DataFrame(
        {
            "slide": [s for s, _ in slides],
            "patient_id": [f"P{k:03d}" for k in range(len(slides))],
            "slide_id": [i for _, i in slides],
            "time": outcome["time_days"].to_numpy(),
            "event": outcome["dmfs_event"].to_numpy(),
            "er": outcome["er"].to_numpy(),
        }
    )
    manifest.to_csv(folder / "manifest.csv", index=False)

    # Independent predictions (also fill the feature cache the cohort runs then reuse), and a risk model
    # whose frozen cut-offs are this cohort's tertiles.
    settings = Settings(
        models=ModelSettings(weights_cache_dir=weights_cache_dir(user_cache)),
        features=FeatureSettings(max_tiles=MAX_TILES),
        cache_dir=user_cache,
    )
    good = tuple(i for _, i in slides[:-2])
    bundle = load_bundle("sequoia-brca-demo", settings)
    folds = load_folds(bundle, settings)
    expression = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # robust on a busy CI machine (OpenMP barriers); same values to rounding
    try:
        for written, slide_id in slides[:-2]:
            path = Path(written) if Path(written).is_absolute() else folder / written
            expression[slide_id] = run_prediction(PredictRequest(path), bundle, folds, settings).expression
    finally:
        torch.set_num_threads(threads)
    model = RiskModel.load(DEFAULT_RISK_MODEL)
    genes = bundle.genes
    index = {g: k for k, g in enumerate(genes)}
    lps = np.sort(
        [
            model.apply({g: float(e[index[g]]) for g in model.genes}).linear_predictor
            for e in expression.values()
        ]
    )
    third = len(lps) // 3
    cutoffs = ((lps[third - 1] + lps[third]) / 2, (lps[2 * third - 1] + lps[2 * third]) / 2)
    split = dataclasses.replace(model, groups=dataclasses.replace(model.groups, cutoffs=cutoffs))
    split.save(folder / "model-tertiles.json")
    fixture = FixtureCohort(
        folder=folder,
        manifest=folder / "manifest.csv",
        model=folder / "model-tertiles.json",
        good=good,
        truncated="truncated",
        poison="poison",
        poison_sha256=hashlib.sha256(poison.read_bytes()).hexdigest(),
        expression=expression,
    )
    with pytest.MonkeyPatch.context() as patch:  # the worker's test hook: the poison slide kills itself
        patch.setenv(POISON_ENV, fixture.poison_sha256)
        yield fixture


def run_args(cohort: FixtureCohort, out: Path, *extra: str) -> list[str | Path]:
    return [
        "cohort",
        "run",
        cohort.manifest,
        "--out",
        out,
        "--risk-model",
        cohort.model,
        "--time-unit",
        "days",
        "--max-tiles",
        str(MAX_TILES),
        "--max-attempts",
        "1",
        *extra,
    ]


@dataclass(frozen=True)
class Run:
    out: Path
    exit_code: int
    stdout: str
    stderr: str
    seconds: float


def run_cohort_cli(cli, cohort: FixtureCohort, out: Path, *extra: str) -> Run:
    start = time.monotonic()
    result = cli(run_args(cohort, out, *extra))
    return Run(out, result.exit_code, result.stdout, result.stderr, time.monotonic() - start)


@pytest.fixture(scope="module")
def single(cli, cohort: FixtureCohort, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The reference run: in this process (--workers 1), one isolated child per slide."""
    return run_cohort_cli(cli, cohort, tmp_path_factory.mktemp("single") / "out")


def table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "cohort.parquet")


def slide_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The table without the run-dependent columns (timings, cache hits, machine)."""
    keep = [c for c in frame.columns if c not in RUN_COLUMNS and not c.startswith(TIMING_PREFIX)]
    return frame[keep]


def assert_same_table(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(slide_columns(table(a)), slide_columns(table(b)))


def ledger(out: Path) -> list[AttemptEntry]:
    return CohortStore(out).read_ledger()


# ---- the reference run ------------------------------------------------------------------------------------
@pytest.mark.timeout(600)
def test_run_scores_good_slides_and_fails_the_bad_ones(single: Run, cohort: FixtureCohort) -> None:
    assert single.exit_code == 3, single.stderr
    frame = table(single.out)
    assert list(frame["slide_id"]) == list(pd.read_csv(cohort.manifest)["slide_id"])  # every row, once
    status = dict(zip(frame["slide_id"], frame["status"], strict=True))
    assert [k for k, v in status.items() if v == "ok"] == list(cohort.good)
    assert status[cohort.truncated] == "failed" and status[cohort.poison] == "failed"
    reasons = frame.set_index("slide_id")
    assert reasons.loc[cohort.truncated, "error_class"] == "SlideFormatError"
    assert "SIGKILL" in reasons.loc[cohort.poison, "reason"]
    assert all("\n" not in r and r for r in reasons.loc[[cohort.truncated, cohort.poison], "reason"])
    assert "cohort: 24 slides; ok 22, failed 2, timeout 0, pending 0" in single.stdout
    assert "this run: 24 slides dispatched, 22 scored" in single.stdout
    # every ok row has exactly one committed record and a result.json behind its slides/ link
    store = CohortStore(single.out)
    records = sorted(p.stem for p in store.results_dir.glob("*/*.json"))
    assert records == sorted(frame.loc[frame["status"] == "ok", "result_key"])
    for slide_id in cohort.good:
        assert (single.out / "slides" / slide_id / "result.json").is_file()
    # the 2 failures are in the ledger with their reasons
    ends = {e.slide_id: e for e in ledger(single.out) if e.event == "end"}
    assert ends[cohort.poison].error_class == "ProcessDied"
    assert ends[cohort.truncated].status == AttemptStatus.FAILED


def test_table_values_match_independent_predictions(
    single: Run, cohort: FixtureCohort, gene_list_csv: Path
) -> None:
    from sequoia_clinic.survival.model import RiskModel

    genes = list(pd.read_csv(gene_list_csv)["gene"])
    expression = pd.read_parquet(single.out / "expression.parquet")
    assert list(expression["slide_id"]) == list(cohort.good)
    assert list(expression.columns[-len(genes) :]) == genes
    assert all(expression[g].dtype == np.float32 for g in genes[:50])
    matrix = expression[genes].to_numpy()
    reference = np.stack([cohort.expression[s] for s in cohort.good]).astype(np.float32)
    np.testing.assert_allclose(matrix, reference, rtol=1e-5, atol=1e-6)  # another process, other threads
    # the risk columns equal the model applied to those predictions
    model = RiskModel.load(cohort.model)
    frame = table(single.out).set_index("slide_id").loc[list(cohort.good)]
    for slide_id, row in frame.iterrows():
        risk = model.apply({g: float(cohort.expression[slide_id][genes.index(g)]) for g in model.genes})
        assert row["linear_predictor"] == pytest.approx(risk.linear_predictor, rel=1e-5, abs=1e-8)
        assert row["risk_group"] == risk.group
        assert row[model.genes[0]] == pytest.approx(
            cohort.expression[slide_id][genes.index(model.genes[0])], rel=1e-5
        )
    assert set(frame["risk_group"]) == set(model.group_names)  # three groups: the fixture's tertiles
    assert not frame["bundle_trained"].any()  # the demo bundle: flagged in every row and in the summary


def test_resume_recomputes_nothing(cli, single: Run, cohort: FixtureCohort) -> None:
    before = [e for e in ledger(single.out) if e.event == "end"]
    again = run_cohort_cli(cli, cohort, single.out)
    assert again.exit_code == 3
    assert "this run: 0 slides dispatched, 0 scored" in again.stdout
    assert "2 slide(s) failed 1 time(s) and are skipped" in again.stderr
    assert [e for e in ledger(single.out) if e.event == "end"] == before  # nothing ran
    assert again.seconds < 0.2 * single.seconds, (again.seconds, single.seconds)
    assert_same_table(single.out, single.out)


def test_status_and_table_commands(cli, single: Run, cohort: FixtureCohort) -> None:
    status = cli(["cohort", "status", single.out])
    assert status.exit_code == 0
    assert "cohort: 24 slides; ok 22, failed 2, timeout 0, pending 0" in status.stdout
    assert re.search(r"failed: poison: .*SIGKILL", status.stdout)
    assert re.search(r"failed: truncated: .*\(SlideFormatError", status.stdout)
    copy = single.out.parent / "copy"
    shutil.copytree(single.out, copy, symlinks=True)
    (copy / "cohort.parquet").unlink()
    rebuilt = cli(["cohort", "table", copy])
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert_same_table(single.out, copy)


# ---- survival figures ---------------------------------------------------------------------------------------
def test_survival_figures_equal_lifelines_and_sksurv(single: Run) -> None:
    import json

    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test
    from sksurv.metrics import concordance_index_censored

    frame = table(single.out)
    ok = frame[frame["status"] == "ok"]
    years = ok["time"].to_numpy() / 365.25
    event = ok["event"].to_numpy().astype(bool)
    groups = ok["risk_group"].to_numpy()
    figures = json.loads((single.out / "survival" / "stratify.json").read_text())
    assert (single.out / "survival" / "km.png").stat().st_size > 1000
    assert figures["n"] == 22 and figures["events"] == int(event.sum())
    curves = pd.read_csv(single.out / "survival" / "km_curves.csv")
    for name in set(groups):
        fitter = KaplanMeierFitter().fit(years[groups == name], event[groups == name])
        mine = curves[curves["group"] == name]
        expected = fitter.survival_function_at_times(mine["time_years"]).to_numpy()
        np.testing.assert_allclose(mine["survival"].to_numpy(), expected, rtol=1e-12)
    p = multivariate_logrank_test(years, groups, event).p_value
    assert figures["logrank"]["p_value"] == pytest.approx(p, rel=1e-10)
    c = concordance_index_censored(event, years, ok["linear_predictor"].to_numpy())[0]
    assert figures["c_index"]["harrell_c"] == pytest.approx(c, rel=1e-10)
    summary = json.loads((single.out / "summary.json").read_text())
    low, high = summary["survival"]["c_index_bootstrap_95ci"]
    assert low <= c <= high
    assert (single.out / "cohort_summary.pdf").read_bytes()[:5] == b"%PDF-"


# ---- engines ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_local_workers_give_the_same_table(
    cli, single: Run, cohort: FixtureCohort, tmp_path: Path
) -> None:
    run = run_cohort_cli(cli, cohort, tmp_path / "two", "--workers", "2")
    assert run.exit_code == 3, run.stderr
    assert_same_table(single.out, run.out)
    writers = {e.pid for e in ledger(run.out)}
    assert len(writers) == 2  # two Dask worker processes wrote the ledger


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_three_shards_merge_to_the_same_table(
    cli, single: Run, cohort: FixtureCohort, tmp_path: Path
) -> None:
    """Three ``--shard i/3`` runs at once (as the tasks of a SLURM array), then ``cohort table``."""
    out = tmp_path / "sharded"
    shards = [
        subprocess.Popen(
            [sys.executable, "-m", "sequoia_clinic", *map(str, run_args(cohort, out, "--shard", f"{i}/3"))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2, 3)
    ]
    results = [shard.communicate(timeout=500) for shard in shards]
    codes = [shard.returncode for shard in shards]
    assert all(code in (0, 3) for code in codes) and codes.count(3) >= 1, results
    by_writer: dict[int, set[str]] = {}
    for entry in ledger(out):
        by_writer.setdefault(entry.pid, set()).add(entry.slide_id)
    parts = list(by_writer.values())
    assert len(parts) == 3 and sorted(s for p in parts for s in p) == sorted(
        pd.read_csv(cohort.manifest)["slide_id"]
    )
    assert all(len(p) == 8 for p in parts)  # disjoint and equal: round robin over the sorted ids
    rebuilt = cli(["cohort", "table", out])
    assert rebuilt.exit_code == 0
    assert_same_table(single.out, out)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_dask_worker_loses_no_slide(cli, single: Run, cohort: FixtureCohort, tmp_path: Path) -> None:
    """12 rows (10 good, the 2 bad) on a 2-worker cluster; one worker is SIGKILLed with a slide in flight."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 10}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
    client = Client(cluster)
    manifest = pd.read_csv(cohort.manifest)
    subset = manifest[manifest["slide_id"].isin([*cohort.good[:10], cohort.truncated, cohort.poison])]
    absolute = [s if Path(s).is_absolute() else str(cohort.folder / s) for s in subset["slide"]]
    subset.assign(slide=absolute).to_csv(tmp_path / "twelve.csv", index=False)
    twelve = dataclasses.replace(cohort, manifest=tmp_path / "twelve.csv", good=cohort.good[:10])
    out = tmp_path / "death"
    killed: dict[str, int] = {}
    stop = threading.Event()

    def kill_a_busy_worker() -> None:
        """Once 3 slides are done, SIGKILL a worker whose slide is in flight."""
        workers = set(client.run(os.getpid).values())
        while not stop.is_set():
            entries = CohortStore(out).read_ledger()
            ended = {e.attempt_id for e in entries if e.event == "end"}
            busy = [
                e for e in entries if e.event == "start" and e.attempt_id not in ended and e.pid in workers
            ]
            if len(ended) >= 3 and busy:
                os.kill(busy[-1].pid, signal.SIGKILL)
                killed["pid"] = busy[-1].pid
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    try:
        run = run_cohort_cli(
            cli, twelve, out, "--executor", "dask", "--scheduler-address", cluster.scheduler_address
        )
    finally:
        stop.set()
        killer.join(10)
        client.close()
        cluster.close()
    assert run.exit_code == 3, run.stderr
    assert "pid" in killed
    entries = ledger(out)
    ended = {e.attempt_id for e in entries if e.event == "end"}
    victims = {e.slide_id for e in entries if e.pid == killed["pid"] and e.attempt_id not in ended}
    assert victims, "the killed worker had a slide in flight"
    frame = table(out)
    assert sorted(frame["slide_id"]) == sorted(subset["slide_id"])  # each row once
    ok = set(frame.loc[frame["status"] == "ok", "slide_id"])
    assert ok == set(twelve.good)  # no healthy slide failed
    assert not [e for e in entries if e.status == AttemptStatus.FAILED and e.slide_id in ok]
    for victim in victims & ok:
        starts = [e for e in entries if e.event == "start" and e.slide_id == victim]
        assert len(starts) >= 2
        key = frame.set_index("slide_id").loc[victim, "result_key"]
        assert len(list(CohortStore(out).results_dir.glob(f"*/{key}.json"))) == 1  # committed once
    # Attempts are at least once: a result finished on the dying worker but not yet fetched is computed
    # again, so a bad slide may have 2 failed attempts here; the good ones have none.
    counts = frame.set_index("slide_id")["failed_attempts"]
    assert (counts.loc[list(twelve.good)] == 0).all() and (counts.loc[["truncated", "poison"]] >= 1).all()
    reference = slide_columns(table(single.out)).set_index("slide_id").loc[list(subset["slide_id"])]
    mine = slide_columns(frame).set_index("slide_id")
    pd.testing.assert_frame_equal(
        mine.drop(columns="failed_attempts"), reference.drop(columns="failed_attempts")
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_slide_timeout_kills_the_slide(cli, cohort: FixtureCohort, tmp_path: Path) -> None:
    manifest = tmp_path / "one.csv"
    pd.DataFrame({"slide": [str(cohort.folder / "crop00.tif")], "patient_id": ["P1"]}).to_csv(
        manifest, index=False
    )
    result = cli(["cohort", "run", manifest, "--out", tmp_path / "out", "--slide-timeout", "0.05"])
    assert result.exit_code == 3
    frame = table(tmp_path / "out")
    assert list(frame["status"]) == ["timeout"]
    assert "--slide-timeout" in frame["reason"][0]


# ---- store, keys and shards (no slides scored) ----------------------------------------------------------
def _result(key: str, attempt_id: str):
    from sequoia_clinic.pipeline.cohort_store import SlideResult

    return SlideResult(
        key=key,
        slide_sha256="s" * 64,
        attempt_id=attempt_id,
        files=f"{key}.{attempt_id}",
        created="2026-01-01T00:00:00Z",
        linear_predictor=0.5,
        risk_score=50.0,
        risk_group="low",
        risk_group_index=0,
        horizons=(),
        signature_genes=(("ESR1", 1.0),),
        qc_codes=(),
        qc_messages=(),
        tiles_kept=1,
        tiles_used=1,
        tissue_fraction=0.5,
        mpp=0.5,
        mpp_source="test",
        slide_format="tiff",
        width_px=1,
        height_px=1,
        bundle_trained=False,
        precision="fp32",
        device="cpu",
        cache_hit=False,
        timings=(),
    )


def test_commit_is_create_exclusive(tmp_path: Path) -> None:
    store = CohortStore(tmp_path)
    first, second = _result("ab" * 32, "first"), _result("ab" * 32, "second")
    assert store.commit(first) is True
    assert store.commit(second) is False  # a duplicate execution is harmless: the first writer won
    assert store.read_result(first.key) == first
    assert [p.name for p in store.record_path(first.key).parent.iterdir()] == [f"{first.key}.json"]


def test_ledger_skips_a_line_cut_by_a_killed_writer(tmp_path: Path) -> None:
    store = CohortStore(tmp_path)
    entry = AttemptEntry("start", "a1", "s1", "/x", "file:1:2", "host", 7, 1.0)
    store.append("host-7", entry)
    with open(store.ledger_path("host-7"), "a") as handle:
        handle.write('{"event": "end", "attempt_id": "a1", "sli')
    assert store.read_ledger() == [entry]


def test_result_key_changes_with_each_ingredient_only() -> None:
    from sequoia_clinic.pipeline.cohort_plan import KeyContext, result_key

    base = KeyContext("/b", "b" * 64, False, "/m.json", "m" * 64, ("json",), '{"tiles":1}')
    key = result_key("s" * 64, "P1", None, base)
    assert key == result_key("s" * 64, "P1", None, dataclasses.replace(base, bundle_path="/elsewhere"))
    variants = [
        result_key("t" * 64, "P1", None, base),
        result_key("s" * 64, "P2", None, base),
        result_key("s" * 64, "P1", 0.25, base),
        result_key("s" * 64, "P1", None, dataclasses.replace(base, bundle_manifest_sha256="c" * 64)),
        result_key("s" * 64, "P1", None, dataclasses.replace(base, risk_model_sha256="n" * 64)),
        result_key("s" * 64, "P1", None, dataclasses.replace(base, formats=("pdf", "json"))),
        result_key("s" * 64, "P1", None, dataclasses.replace(base, settings='{"tiles":2}')),
        result_key("s" * 64, "P1", None, dataclasses.replace(base, software_version="9.9")),
    ]
    assert len({key, *variants}) == len(variants) + 1


def test_key_settings_leave_out_run_time_knobs() -> None:
    from sequoia_clinic.pipeline.cohort_plan import key_settings
    from sequoia_clinic.settings import Device, Settings, TileSettings

    base = Settings()
    runtime = dataclasses.replace(
        base,
        device=Device.CUDA,
        encoder_batch_size=7,
        cache_dir=Path("/elsewhere"),
        tiles=TileSettings(batch_size=3, read_threads=9, tile_cache_mb=1),
    )
    assert key_settings(runtime) == key_settings(base)
    assert key_settings(dataclasses.replace(base, tiles=TileSettings(tile_px=224))) != key_settings(base)


def test_shards_partition_the_sorted_plan() -> None:
    from sequoia_clinic.errors import OptionError
    from sequoia_clinic.pipeline.cohort_manifest import ManifestRow
    from sequoia_clinic.pipeline.cohort_plan import Shard

    rows = tuple(ManifestRow(k, f"s{(k * 7) % 10}", Path(f"/s{k}"), "P") for k in range(10))
    parts = [Shard(i, 3).select(rows) for i in (1, 2, 3)]
    assert sorted(r.slide_id for p in parts for r in p) == sorted(r.slide_id for r in rows)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert Shard.parse("2/3") == Shard(2, 3) and Shard.parse(None) == Shard(1, 1)
    for text in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(OptionError):
            Shard.parse(text)


def test_option_errors_exit_2_and_write_nothing(cli, cohort: FixtureCohort, tmp_path: Path) -> None:
    out = tmp_path / "never"
    for extra in (["--executor", "dask"], ["--shard", "4/3"], ["--scheduler-address", "tcp://x:1"]):
        result = cli(run_args(cohort, out, *extra))
        assert result.exit_code == 2, (extra, result.stdout)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert not out.exists()
    missing = cli(["cohort", "status", tmp_path])
    assert missing.exit_code == 2 and "no plan.json" in missing.stderr
