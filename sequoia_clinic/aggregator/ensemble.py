"""Fold ensembles: build from a config (``registry.py``), load each fold strictly, average folds.

A :class:`FoldEnsemble` holds one model per fold; its prediction is the arithmetic mean of the
fold outputs, as SEQUOIA's ``predict_independent_dataset.py`` does for external slides. (For TCGA slides
only the fold whose test split holds the slide is out-of-sample; ``per_fold`` keeps every fold's output.)

``load_ensemble(..., deferred=True)`` checks every fold file's sha256 at once but reads the weights only
at the first prediction: a slide's flow refuses a wrong file before its long tile encoding, yet never
holds the encoder's weights and the folds' together (UNI: 1.2 GB of encoder, 1.0 GB of five folds). A file
whose identity on disk (``HashMemo.identity``) changed between the check and the loading is checked again.
``predict(..., keep=False)`` on deferred folds reads, runs and drops one fold at a time, for a flow that
predicts once (``predict``): it holds one fold's weights instead of all of them (UNI: 205 MB, not 1.0 GB).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sequoia_clinic.aggregator.registry import aggregator_kind
from sequoia_clinic.errors import BundleError
from sequoia_clinic.weightio import HashMemo, load_strict, read_state_dict, verify_sha256


def load_fold(
    kind: str, config: Any, path: Path, sha256: str | None, memo: HashMemo | None = None
) -> nn.Module:
    """One fold's model on the CPU: verify the checksum (``memo`` skips re-hashing an unchanged file),
    then load ``strict=True``."""
    spec = aggregator_kind(kind)
    if sha256 is not None:
        verify_sha256(path, sha256, what=f"{kind} fold weights", memo=memo)
    model = spec.build(config, True)
    load_strict(model, read_state_dict(path), path, what=f"{kind} aggregator {config}")
    return model.float().eval()


def _identity(path: Path) -> str:
    """``HashMemo.identity``, or "" for a file that cannot be found (loading it then names the problem)."""
    try:
        return HashMemo.identity(path)
    except OSError:
        return ""


@dataclass(frozen=True)
class FoldFile:
    """A fold's weights file whose sha256 was checked, to be loaded at first use."""

    path: Path
    sha256: str | None
    identity: str  # HashMemo.identity of the file when its sha256 was checked


@dataclass
class FoldEnsemble:
    """Fold models of one aggregator; ``predict`` returns every fold's output and their mean.

    ``deferred`` folds (checked files, see the module docstring) are loaded into ``models`` by the first
    :meth:`predict`.
    """

    kind: str
    config: Any
    models: list[nn.Module]
    device: torch.device
    deferred: tuple[FoldFile, ...] = ()
    memo: HashMemo | None = None

    def __post_init__(self) -> None:
        if not self.models and not self.deferred:
            raise BundleError("a fold ensemble needs at least one fold")
        self.models = [m.to(self.device).eval() for m in self.models]

    def _read(self, fold: FoldFile) -> nn.Module:
        sha256 = fold.sha256 if _identity(fold.path) != fold.identity else None  # unchanged: checked
        return load_fold(self.kind, self.config, fold.path, sha256, self.memo).to(self.device).eval()

    def _load_deferred(self) -> None:
        loaded = [self._read(fold) for fold in self.deferred]  # all or none: a failure changes nothing
        self.models.extend(loaded)
        self.deferred = ()

    @property
    def num_clusters(self) -> int:
        return int(self.config.num_clusters)

    @property
    def input_dim(self) -> int:
        return int(self.config.input_dim)

    def predict(self, tokens: np.ndarray | torch.Tensor, keep: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) or (B, N, D) tokens → (per_fold (F, B, G) float32, fold mean (B, G) float64).

        ``keep=False``: deferred folds are read, run and dropped one at a time and stay deferred (see the
        module docstring); folds already loaded are used as they are.
        """
        x = torch.as_tensor(
            np.asarray(tokens, dtype=np.float32) if isinstance(tokens, np.ndarray) else tokens
        )
        if x.ndim == 2:
            x = x.unsqueeze(0)
        if not torch.isfinite(x).all():
            raise ValueError("non-finite model input (this is a bug: cluster features must be finite)")
        x = x.to(self.device, torch.float32)
        if keep:
            self._load_deferred()
        outputs = [self._run(model, x) for model in self.models]
        outputs += [self._run(self._read(fold), x) for fold in self.deferred]  # each fold freed after use
        per_fold = np.stack(outputs)
        return per_fold, per_fold.astype(np.float64).mean(axis=0)

    @staticmethod
    def _run(model: nn.Module, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model(x).float().cpu().numpy()


def load_ensemble(
    kind: str,
    config: Any,
    folds: Sequence[tuple[Path, str | None]],
    device: torch.device,
    memo: HashMemo | None = None,
    deferred: bool = False,
) -> FoldEnsemble:
    """Load every fold (path, sha256) strictly and place the ensemble on ``device``.

    ``deferred``: check every file's sha256 now, read the weights at the first prediction.
    """
    if not deferred:
        models = [load_fold(kind, config, path, sha, memo) for path, sha in folds]
        return FoldEnsemble(kind=kind, config=config, models=models, device=device)
    checked = []
    for path, sha in folds:
        identity = _identity(Path(path))
        if sha is not None:
            verify_sha256(path, sha, what=f"{kind} fold weights", memo=memo)
        checked.append(FoldFile(Path(path), sha, identity))
    return FoldEnsemble(
        kind=kind, config=config, models=[], device=device, deferred=tuple(checked), memo=memo
    )
