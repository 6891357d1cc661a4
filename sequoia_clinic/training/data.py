"""The training set in memory: cluster features and measured expression per slide, and the recipe.

A sample is a slide (as in the reference): its cluster features (``num_clusters × dim``) and the measured
expression of its row of the expression table (or of its patient's row). Folds group slides by patient.
:meth:`TrainingData.fingerprint` is the sha256 of everything training reads (ids, genes, features,
targets), recorded in the bundle and checked when a run is resumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from sequoia_clinic.errors import OptionError


class Selection(StrEnum):
    """How the checkpoint of a fold is chosen on the validation set (see training/loop.py)."""

    LOSS = "loss"  # lowest validation MSE
    LOSS_CORR = "loss+corr"  # highest validation mean r among epochs whose MSE is within delta of the best


@dataclass(frozen=True)
class Recipe:
    """Optimisation recipe; the defaults are the reference's (sequoia-pub src/main.py, scripts/run_train.sh)."""

    lr: float = 1e-3  # AdamW
    weight_decay: float = 0.0
    batch_size: int = 16
    max_epochs: int = 200
    patience: int = 20  # epochs without a new best checkpoint before stopping
    selection: Selection = Selection.LOSS_CORR
    delta: float = 0.5  # absolute MSE margin for loss+corr
    seed: int = 99  # model initialisation and data order (per fold, derived from it)
    eval_batch_size: int = 64  # validation/test forward passes (no effect on results)

    def __post_init__(self) -> None:
        checks = (
            ("lr", self.lr > 0),
            ("weight_decay", self.weight_decay >= 0),
            ("batch_size", self.batch_size >= 1),
            ("max_epochs", self.max_epochs >= 1),
            ("patience", self.patience >= 1),
            ("delta", self.delta >= 0),
            ("eval_batch_size", self.eval_batch_size >= 1),
        )
        for name, ok in checks:
            if not ok:
                raise OptionError(f"{name} is out of range: {getattr(self, name)}", option=name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["selection"] = self.selection.value
        out.pop("eval_batch_size")  # no effect on the result
        return out


@dataclass(frozen=True, eq=False)
class TrainingData:
    """Slides × (clusters, dim) features and slides × genes targets, float32, in slide order."""

    slide_ids: tuple[str, ...]
    patients: tuple[str, ...]
    features: np.ndarray  # (n_slides, num_clusters, dim) float32
    targets: np.ndarray  # (n_slides, n_genes) float32
    genes: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.slide_ids)
        if len(self.patients) != n or self.features.shape[0] != n or self.targets.shape[0] != n:
            raise ValueError("training data: one patient, feature block and target row per slide")
        if self.targets.shape[1] != len(self.genes):
            raise ValueError("training data: one target column per gene")
        if self.features.ndim != 3:
            raise ValueError("training data: features must be (slides, clusters, dim)")

    @property
    def num_clusters(self) -> int:
        return int(self.features.shape[1])

    @property
    def input_dim(self) -> int:
        return int(self.features.shape[2])

    def rows_of(self, patients: Iterable[str]) -> np.ndarray:
        """Indices of the slides of ``patients``, in slide order."""
        wanted = set(patients)
        return np.asarray([i for i, p in enumerate(self.patients) if p in wanted], dtype=np.int64)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in (self.slide_ids, self.patients, self.genes):
            digest.update("\x1f".join(part).encode("utf-8"))
            digest.update(b"\x1e")
        for array in (self.features, self.targets):
            block = np.ascontiguousarray(array, dtype=np.float32)
            digest.update(str(block.shape).encode())
            digest.update(block.tobytes())
        return digest.hexdigest()
