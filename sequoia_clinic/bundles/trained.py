"""Writing a bundle from a training run: fold weights, gene list, encoder and a checksummed manifest.

The encoder and preprocessing are those the training features were made with (the source bundle's). A
recipe-made encoder (the demo bundle's) keeps its recipe entry, so nothing is copied; any other encoder
weights file is copied into ``encoder/``. Each fold's chosen checkpoint is copied to
``folds/fold-<i>.safetensors``. The manifest says ``trained: true`` and carries the training record in
``provenance.training``; the folder must pass :func:`~sequoia_clinic.bundles.store.verify_bundle`.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from sequoia_clinic.bundles.manifest import BUNDLE_FORMAT, MANIFEST_NAME, Bundle, file_entry, parse_bundle
from sequoia_clinic.bundles.store import verify_bundle
from sequoia_clinic.fileio import write_json_atomic

INTENDED_USE = (
    "Research use only. Predicts the measured expression of the genes in genes.csv, on the scale of the "
    "training table after the recorded transform, from an H&E whole-slide image of the stated cancer "
    "type. Trained by its user on their own cohort (see provenance.training). Not a medical device."
)


@dataclass(frozen=True)
class TrainedBundle:
    """What ``train`` hands over for the bundle (paths of finished files, records for the manifest)."""

    name: str
    version: str
    cancer: str
    source: Bundle  # the bundle whose encoder and preprocessing made the training features
    aggregator: str
    config: dict[str, Any]
    fold_weights: tuple[Path, ...]  # in fold order
    genes: tuple[str, ...]
    training: dict[str, Any]  # provenance.training
    description: str


def _encoder_entry(spec: TrainedBundle, folder: Path) -> dict[str, Any]:
    ref = spec.source.encoder_weights
    if ref.generate is not None:  # regenerated from its recipe into the weights cache, as in the source
        return {"file": ref.file, "sha256": ref.sha256, "generate": dict(ref.generate)}
    target = folder / "encoder" / PurePosixPath(ref.file).name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.source.file(ref), target)
    return file_entry(target, folder)


def write_trained_bundle(folder: Path, spec: TrainedBundle) -> Bundle:
    """Write the bundle's files and manifest into ``folder`` (a fresh folder), then verify every file."""
    folds: list[dict[str, Any]] = []
    (folder / "folds").mkdir(parents=True, exist_ok=True)
    for i, weights in enumerate(spec.fold_weights):
        target = folder / "folds" / f"fold-{i}.safetensors"
        shutil.copyfile(weights, target)
        folds.append({"fold": i, "weights": file_entry(target, folder)})
    pd.DataFrame({"gene": list(spec.genes)}).to_csv(folder / "genes.csv", index=False)
    preprocessing = {
        k: (v.value if hasattr(v, "value") else v) for k, v in asdict(spec.source.preprocessing).items()
    }
    manifest = {
        "format": BUNDLE_FORMAT,
        "name": spec.name,
        "version": spec.version,
        "cancer": spec.cancer,
        "trained": True,
        "description": spec.description,
        "intended_use": INTENDED_USE,
        "licence": f"Aggregator weights trained by the bundle's user. The encoder weights keep the licence "
        f"stated in the manifest of bundle '{spec.source.name}'.",
        "encoder": {"name": spec.source.encoder_name, "weights": _encoder_entry(spec, folder)},
        "aggregator": {"kind": spec.aggregator, "config": spec.config, "folds": folds},
        "genes": {**file_entry(folder / "genes.csv", folder), "count": len(spec.genes), "column": "gene"},
        "preprocessing": preprocessing,
        "provenance": {"training": spec.training, "features_bundle": _source_record(spec.source)},
    }
    write_json_atomic(folder / MANIFEST_NAME, manifest)
    bundle = parse_bundle(folder, spec.source.weights_cache)
    verify_bundle(bundle).raise_for_errors()
    return bundle


def _source_record(bundle: Bundle) -> dict[str, Any]:
    return {
        "name": bundle.name,
        "version": bundle.version,
        "manifest_sha256": bundle.manifest_sha256,
        "encoder_weights_sha256": bundle.encoder_weights.sha256,
    }
