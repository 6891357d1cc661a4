"""train: a cohort's slides + measured expression → a trained bundle, out-of-fold predictions and baselines.

The flow (:func:`train_bundle`, a pure function of a :class:`TrainRequest` and the :class:`Settings` apart
from the clock; it is :func:`plan_training`, step 1, then :func:`run_training`, steps 2-4, which the CLI
calls separately so that every check fails before the progress display starts):

1. check everything cheap first — the output folder, the manifest, the expression table (symbols mapped,
   duplicates averaged, transform applied, NaN refused), the match of slides to expression rows, the folds
   (``--splits`` or patient-grouped K-fold; no patient in two test folds), the bundles and the model
   config — so a bad input exits with one line and nothing written;
2. cluster features for every slide (:mod:`.features`: the per-slide feature cache, or reference ``.h5``);
3. train every fold (:mod:`sequoia_clinic.training.loop`), checkpointing under ``OUT/checkpoints`` so
   ``--resume`` continues an interrupted run and ends with the same weights;
4. write, atomically: the bundle (``manifest.json`` with ``trained: true`` and ``provenance.training``,
   ``genes.csv``, ``folds/fold-<i>.safetensors`` = each fold's chosen checkpoint, the encoder),
   ``oof.parquet`` (every slide predicted by the fold whose test set held it), the baselines
   ``baseline_untrained.parquet`` and ``baseline_train_mean.parquet``, ``epochs.csv``,
   ``training_curves.png``, ``splits.json`` and ``training.json``; then drop the checkpoints (unless kept).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sequoia_clinic import __version__
from sequoia_clinic.aggregator.registry import aggregator_kind
from sequoia_clinic.bundles.manifest import Bundle
from sequoia_clinic.bundles.store import load_bundle, verify_bundle
from sequoia_clinic.bundles.trained import TrainedBundle, write_trained_bundle
from sequoia_clinic.encoders.model import resolve_device
from sequoia_clinic.errors import BundleError, OptionError, TableError
from sequoia_clinic.evaluation.io import prediction_frame, write_prediction_table
from sequoia_clinic.fileio import atomic_dir, check_output_dir, csv_safe_frame, sha256_file, write_json_atomic
from sequoia_clinic.pipeline.features import (
    TrainingSlide,
    check_feature_files,
    collect_features,
    read_training_manifest,
)
from sequoia_clinic.pipeline.predict import DEFAULT_BUNDLE
from sequoia_clinic.progress import ProgressLike
from sequoia_clinic.settings import Settings
from sequoia_clinic.signatures.mapping import load_mapper
from sequoia_clinic.training.data import Recipe, Selection, TrainingData
from sequoia_clinic.training.expression import (
    ExpressionTable,
    Transform,
    drop_constant,
    read_expression,
    strip_extension,
)
from sequoia_clinic.training.folds import Fold, check_folds, patient_kfold, read_splits, restrict, splits_json
from sequoia_clinic.training.loop import EpochHook, ModelSpec, TrainingRun, precision_name, train_folds
from sequoia_clinic.training.outputs import epoch_table, fold_summary, training_curves
from sequoia_clinic.weightio import read_state_dict, verify_sha256

__all__ = [
    "Recipe",
    "Selection",
    "TrainOutcome",
    "TrainRequest",
    "Transform",
    "plan_training",
    "run_training",
    "train_bundle",
]

CHECKPOINTS = "checkpoints"
RUN_RECORD = "run.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
PUBLISHED_VIS = {"depth": 6, "nheads": 16, "dimensions_f": 64, "dimensions_s": 64, "dimensions_c": 64}


@dataclass(frozen=True)
class TrainRequest:
    manifest: Path
    expression: Path
    out: Path
    transform: Transform
    expression_unit: str = "as given"  # e.g. "FPKM-UQ" (before the transform); recorded only
    features_bundle: str | Path | None = (
        None  # encoder + preprocessing; None: the --init-from bundle or the demo
    )
    init_from: str | Path | None = None
    aggregator: str = "vis"
    config: Mapping[str, Any] = field(default_factory=dict)  # overrides of the aggregator config
    folds: int = 5
    fold_seed: int = 0
    val_fraction: float = 0.1
    splits: Path | None = None
    recipe: Recipe = field(default_factory=Recipe)
    name: str | None = None  # bundle name; None: the output folder's name
    cancer: str | None = None  # None: the features bundle's
    version: str = "1.0.0"
    resume: bool = False
    keep_checkpoints: bool = False
    checkpoint_every: int = 1


@dataclass(frozen=True, eq=False)
class TrainOutcome:
    bundle: Bundle
    out: Path
    run: TrainingRun
    data: TrainingData
    expression: ExpressionTable
    folds: tuple[Fold, ...]
    training_id: str
    summary: dict[str, Any]


# ---- step 1: checks ---------------------------------------------------------------------------------------
def _check_out(request: TrainRequest) -> None:
    out = Path(request.out)
    work = out / CHECKPOINTS / RUN_RECORD
    if request.resume:
        if not work.is_file():
            raise OptionError(
                "--resume: the output folder holds no training checkpoints",
                out,
                fix="Resume with the --out folder of the interrupted run, or start without --resume.",
            )
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OptionError(
            "the output folder exists and is not empty",
            out,
            fix="Choose a new --out folder, or pass --resume to continue an interrupted run there.",
        )
    check_output_dir(out)


def _bundle_name(request: TrainRequest) -> str:
    name = request.name or Path(request.out).resolve().name.lower()
    if not _NAME.match(name):
        raise OptionError(
            f"'{name}' cannot be a bundle name",
            fix="Pass --name with lowercase letters, digits, '.', '_' or '-'.",
            option="name",
        )
    return name


def _listing(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")


def match_targets(slides: tuple[TrainingSlide, ...], table: ExpressionTable) -> np.ndarray:
    """The expression row of every slide (by slide id, with or without extension; else by patient)."""
    if table.slide_ids is not None:
        index: dict[str, int] = {}
        for i, key in enumerate(table.slide_ids):
            index.setdefault(key, i)
            index.setdefault(strip_extension(key), i)
        keys = [s.slide_id for s in slides]
        rows = [index.get(k, index.get(strip_extension(k), -1)) for k in keys]
        what = "slide"
    else:
        index = {p: i for i, p in enumerate(table.patients)}
        keys = [s.patient_id for s in slides]
        rows = [index.get(k, -1) for k in keys]
        what = "patient"
    missing = sorted({k for k, r in zip(keys, rows, strict=True) if r < 0})
    if len(missing) == len(set(keys)):
        raise TableError(
            f"the expression table has none of the manifest's {what}s",
            table.path,
            fix=f"Its {'slide_id/wsi_file_name' if what == 'slide' else 'patient_id'} values must match the manifest's.",
        )
    if missing:
        raise TableError(
            f"the expression table lacks {len(missing)} of the manifest's {what}s: {_listing(missing)}",
            table.path,
            fix="Add their expression, or remove those rows from the manifest.",
        )
    if table.slide_ids is not None:
        conflicts = [
            s.slide_id
            for s, r in zip(slides, rows, strict=True)
            if table.patients[r] not in (s.patient_id, table.slide_ids[r])
        ]
        if conflicts:
            raise TableError(
                f"patient_id differs between the manifest and the expression table for {_listing(conflicts)}",
                table.path,
            )
    return np.asarray(rows, dtype=np.int64)


def make_folds(request: TrainRequest, patients: list[str]) -> tuple[Fold, ...]:
    if request.splits is not None:
        folds = restrict(read_splits(request.splits), patients)
        check_folds(folds, request.splits)
        return folds
    folds = patient_kfold(patients, request.folds, request.fold_seed, request.val_fraction)
    check_folds(folds)
    return folds


def _model_config(
    request: TrainRequest, genes: int, dim: int, clusters: int, init: Bundle | None
) -> tuple[str, Any]:
    if init is not None:
        if request.config:
            raise OptionError(
                "--config cannot be combined with --init-from (the architecture is the bundle's)",
                fix="Drop --config.",
            )
        kind = aggregator_kind(init.aggregator)
        base = {
            **init.aggregator_config.to_dict(),
            "num_outputs" if init.aggregator == "vis" else "output_dim": genes,
        }
        return init.aggregator, kind.parse(base, "--init-from bundle")
    kind = aggregator_kind(request.aggregator)
    if request.aggregator == "vis":
        base = {**PUBLISHED_VIS, "num_outputs": genes, "input_dim": dim, "num_clusters": clusters}
    else:
        base = {"output_dim": genes, "input_dim": dim, "num_clusters": clusters}
    overrides = dict(request.config)
    fixed = [k for k in overrides if k in ("num_outputs", "output_dim", "input_dim", "num_clusters")]
    if fixed:
        raise OptionError(
            f"--config cannot set {', '.join(fixed)}: they follow the genes and the features",
            fix="Leave them out of the config.",
        )
    return request.aggregator, kind.parse({**base, **overrides}, "--config")


def _init_loader(init: Bundle):  # noqa: ANN202 - InitLoader
    folds = init.folds

    def load(fold: int) -> dict[str, torch.Tensor]:
        ref = folds[fold % len(folds)].weights
        path = init.file(ref)
        verify_sha256(path, ref.sha256, what=f"--init-from fold {fold % len(folds)} weights")
        return read_state_dict(path)

    return load


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- the flow ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TrainingPlan:
    """A checked training request: everything step 1 resolved, before any slide is read."""

    request: TrainRequest
    name: str
    slides: tuple[TrainingSlide, ...]  # the manifest rows trained on (patients in some fold)
    table: ExpressionTable  # genes in output order
    rows: np.ndarray  # expression row of each slide
    folds: tuple[Fold, ...]
    source: Bundle  # features bundle (encoder + preprocessing)
    init: Bundle | None
    same_genes: bool  # --init-from: the output layer is kept
    kind: str
    config: Any
    device: torch.device


def plan_training(request: TrainRequest, settings: Settings) -> TrainingPlan:
    """Step 1: every cheap check (see the module docstring); raises before anything is written."""
    _check_out(request)
    name = _bundle_name(request)
    if request.checkpoint_every < 1:
        raise OptionError("--checkpoint-every must be at least 1", option="checkpoint_every")
    slides = read_training_manifest(request.manifest)
    table = read_expression(request.expression, request.transform, load_mapper())
    rows = match_targets(slides, table)
    table = drop_constant(table, rows)
    folds = make_folds(request, sorted({s.patient_id for s in slides}))
    in_folds = {p for f in folds for p in (*f.train, *f.val, *f.test)}
    keep = [s.patient_id in in_folds for s in slides]
    init = load_bundle(request.init_from, settings) if request.init_from is not None else None
    source = load_bundle(request.features_bundle or request.init_from or DEFAULT_BUNDLE, settings)
    same_genes = True
    if init is not None:
        same_genes = set(table.genes) == set(init.genes)
        if same_genes:  # keep the published head: targets in the bundle's output order
            order = {g: i for i, g in enumerate(table.genes)}
            columns = [order[g] for g in init.genes]
            table = dataclasses.replace(table, genes=init.genes, values=table.values[:, columns])
    dim, clusters = source.encoder_spec.out_dim, source.preprocessing.n_clusters
    kind, config = _model_config(request, len(table.genes), dim, clusters, init)
    if config.input_dim != dim or config.num_clusters != clusters:
        raise BundleError(
            f"the model takes ({config.num_clusters}, {config.input_dim}) inputs but the features bundle "
            f"'{source.name}' makes ({clusters}, {dim})",
            fix="Use a features bundle with the same encoder as the --init-from bundle.",
        )
    used = tuple(s for s, k in zip(slides, keep, strict=True) if k)
    check_feature_files(used, clusters, dim)
    return TrainingPlan(
        request=request,
        name=name,
        slides=used,
        table=table,
        rows=rows[np.asarray(keep, dtype=bool)],
        folds=folds,
        source=source,
        init=init,
        same_genes=same_genes,
        kind=kind,
        config=config,
        device=resolve_device(settings.device),
    )


def train_bundle(
    request: TrainRequest,
    settings: Settings,
    progress: ProgressLike = None,
    on_epoch: EpochHook | None = None,
) -> TrainOutcome:
    """The ``train`` flow (module docstring): :func:`plan_training`, then :func:`run_training`."""
    return run_training(plan_training(request, settings), settings, progress, on_epoch)


def run_training(
    plan: TrainingPlan,
    settings: Settings,
    progress: ProgressLike = None,
    on_epoch: EpochHook | None = None,
) -> TrainOutcome:
    """Steps 2-4: features, training (or resuming) every fold, and the outputs."""
    request, table, folds, init, source = plan.request, plan.table, plan.folds, plan.init, plan.source
    kind, config, device = plan.kind, plan.config, plan.device
    features = collect_features(plan.slides, source, settings, progress)
    data = TrainingData(
        slide_ids=tuple(s.slide_id for s in plan.slides),
        patients=tuple(s.patient_id for s in plan.slides),
        features=features.features,
        targets=table.values[plan.rows].astype(np.float32),
        genes=table.genes,
    )
    fingerprint = data.fingerprint()
    run_material = {
        "data": fingerprint,
        "folds": splits_json(folds),
        "recipe": request.recipe.to_dict(),
        "aggregator": kind,
        "config": config.to_dict(),
        "init_from": None if init is None else init.manifest_sha256,
        "features_bundle": source.manifest_sha256,
    }
    training_id = _digest(run_material)
    work = Path(request.out) / CHECKPOINTS
    _start_or_resume(work, training_id, request.resume)
    spec = ModelSpec(
        kind,
        config,
        init=None if init is None else _init_loader(init),
        init_same_genes=plan.same_genes,
        init_source=str(init.path) if init is not None else "",
    )
    run = train_folds(
        data,
        folds,
        request.recipe,
        spec,
        device,
        work,
        training_id,
        resume=request.resume,
        checkpoint_every=request.checkpoint_every,
        progress=progress,
        on_epoch=on_epoch,
    )
    summary = _summary(
        request, table, data, folds, run, features.sources, features.filled_rows, device, init, source
    )
    training = {
        "id": training_id,
        "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "software": f"sequoia-clinic {__version__}",
        "data_sha256": fingerprint,
        "manifest_sha256": sha256_file(Path(request.manifest)),
        "expression_sha256": sha256_file(Path(request.expression)),
        **summary,
    }
    bundle = _write_outputs(
        request, plan.name, source, kind, config, data, folds, run, training, training_id, settings
    )
    if not request.keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    return TrainOutcome(bundle, Path(request.out), run, data, table, folds, training_id, training)


def _start_or_resume(work: Path, training_id: str, resume: bool) -> None:
    record = work / RUN_RECORD
    if resume:
        saved = json.loads(record.read_text("utf-8"))
        if saved.get("training_id") != training_id:
            raise OptionError(
                "--resume: the interrupted run used other data, folds, model or recipe",
                work.parent,
                fix="Resume with exactly the same inputs and options, or train into a new --out folder.",
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, {"training_id": training_id})


def _summary(
    request: TrainRequest,
    table: ExpressionTable,
    data: TrainingData,
    folds: tuple[Fold, ...],
    run: TrainingRun,
    sources: tuple[str, ...],
    filled_rows: int,
    device: torch.device,
    init: Bundle | None,
    source: Bundle,
) -> dict[str, Any]:
    return {
        "n_slides": len(data.slide_ids),
        "n_patients": len(set(data.patients)),
        "n_genes": len(data.genes),
        "expression": {
            "file": Path(request.expression).name,
            "keyed_by": table.keyed_by,
            "transform": table.transform.value,
            "unit": request.expression_unit,
            "genes": table.handling.to_dict(),
        },
        "features": {
            "bundle": source.name,
            "sources": {k: sources.count(k) for k in sorted(set(sources))},
            "reference_rows_filled": filled_rows,
        },
        "folds": {
            "k": len(folds),
            "source": "splits file" if request.splits is not None else "patient-grouped K-fold",
            "seed": None if request.splits is not None else request.fold_seed,
            "val_fraction": None if request.splits is not None else request.val_fraction,
            "file": "splits.json",
        },
        "recipe": request.recipe.to_dict(),
        "init_from": None
        if init is None
        else {
            "bundle": init.name,
            "manifest_sha256": init.manifest_sha256,
            "same_genes": set(init.genes) == set(data.genes),
        },
        "device": str(device),
        "precision": precision_name(device),
        "best_epochs": [o.best_epoch for o in run.folds],
        "per_fold": [
            fold_summary(o, len(f.train), len(f.val), len(f.test))
            for o, f in zip(run.folds, folds, strict=True)
        ],
    }


def _write_outputs(
    request: TrainRequest,
    name: str,
    source: Bundle,
    kind: str,
    config: Any,
    data: TrainingData,
    folds: tuple[Fold, ...],
    run: TrainingRun,
    training: dict[str, Any],
    training_id: str,
    settings: Settings,
) -> Bundle:
    out = Path(request.out)
    pred, untrained, mean, fold_of = run.out_of_fold(len(data.slide_ids), len(data.genes))
    rows = fold_of >= 0
    with atomic_dir(out) as tmp:
        epochs = epoch_table(run.folds)
        csv_safe_frame(epochs).to_csv(tmp / "epochs.csv", index=False, float_format="%.6g")
        (tmp / "training_curves.png").write_bytes(training_curves(epochs, request.recipe.selection.value))
        write_json_atomic(tmp / "splits.json", splits_json(folds))
        ids = (
            np.asarray(data.patients)[rows].tolist(),
            np.asarray(data.slide_ids)[rows].tolist(),
            fold_of[rows].tolist(),
        )
        for file, values in (
            ("oof.parquet", pred),
            ("baseline_untrained.parquet", untrained),
            ("baseline_train_mean.parquet", mean),
        ):
            frame = prediction_frame(ids[0], ids[1], ids[2], data.genes, values[rows])
            write_prediction_table(frame, tmp / file, training_id)
        files = (
            "oof.parquet",
            "baseline_untrained.parquet",
            "baseline_train_mean.parquet",
            "epochs.csv",
            "splits.json",
        )
        training = {**training, "outputs": {f: sha256_file(tmp / f) for f in files}}
        write_json_atomic(tmp / "training.json", training)
        spec = TrainedBundle(
            name=name,
            version=request.version,
            cancer=request.cancer or source.cancer,
            source=source,
            aggregator=kind,
            config=config.to_dict(),
            fold_weights=tuple(o.weights for o in run.folds),
            genes=data.genes,
            training=training,
            description=(
                f"{kind} trained on {training['n_patients']} patients ({training['n_slides']} slides), "
                f"{len(data.genes)} genes, {len(folds)} folds; features from bundle '{source.name}'"
            ),
        )
        write_trained_bundle(tmp, spec)
    report = verify_bundle(out, settings)
    report.raise_for_errors()
    return report.bundle
