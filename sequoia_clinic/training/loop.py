"""The training loop of one fold, checkpoint selection, test predictions from the chosen checkpoint, baselines.

Per epoch: one pass over the fold's training slides in an order drawn from a per-fold ``torch.Generator``
(its state is saved in every checkpoint), MSE loss over all genes and slides, AdamW (fused kernel); then the whole
validation set is predicted in inference mode and scored once: MSE, and the mean over genes of the
Pearson r computed vectorised over all validation slides (the reference averaged per-batch r of 16
slides, a noisy figure computed with a Python loop over 20,820 genes).

**Checkpoint selection** (fixing the reference's B1/B2):

* ``loss``: the epoch with the lowest validation MSE;
* ``loss+corr`` (default): the epoch with the highest validation mean r among epochs whose MSE is within
  ``delta`` of the lowest MSE seen so far — checked when the epoch is chosen, and again whenever the lowest
  MSE improves (a chosen epoch that falls out of the margin is replaced by the epoch that set the new lowest
  MSE), so the chosen checkpoint's MSE is always within ``delta`` of the best.

Training stops when ``patience`` epochs in a row bring no new chosen checkpoint, or at ``max_epochs``. Test
predictions come from the chosen checkpoint, re-read from disk (sha256-checked) into a fresh model and run
with the model's own forward. Baselines per fold: an untrained model of the same architecture with a
seed derived from (seed, fold) — never the pre-trained network when fine-tuning — and the training slides'
mean per gene.

On CUDA with native bfloat16, forward passes run under bf16 autocast (the loss in float32); on a CPU
everything is float32. With a fixed seed on a CPU, runs are bit-identical, and so is a run killed and
resumed from its checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sequoia_clinic.errors import OptionError
from sequoia_clinic.progress import ProgressLike, reporter
from sequoia_clinic.training.checkpoint import (
    EpochRecord,
    FoldState,
    SelectionState,
    best_path,
    load_best,
    load_result,
    read_history,
    read_state,
    restore,
    save_best,
    save_last,
    save_result,
)
from sequoia_clinic.training.data import Recipe, Selection, TrainingData
from sequoia_clinic.training.folds import Fold
from sequoia_clinic.training.model import (
    DATA_ORDER,
    MODEL_INIT,
    UNTRAINED_BASELINE,
    build_model,
    derived_seed,
    eval_forward,
    initialise_from,
    train_forward,
)

InitLoader = Callable[[int], Mapping[str, torch.Tensor]]  # fold -> state dict to start from
EpochHook = Callable[[EpochRecord], None]


@dataclass(frozen=True)
class ModelSpec:
    """What to train: the aggregator kind and config, and optionally weights to start from."""

    kind: str
    config: Any
    init: InitLoader | None = None
    init_same_genes: bool = True
    init_source: str = ""


@dataclass(frozen=True, eq=False)
class FoldOutcome:
    fold: int
    test_rows: np.ndarray  # slide indices of the fold's test patients
    predictions: np.ndarray  # (n_test, genes) float32, from the chosen checkpoint
    untrained: np.ndarray  # (n_test, genes) float32, untrained baseline
    train_mean: np.ndarray  # (genes,) float32, training slides' mean
    best_epoch: int
    best_val_loss: float
    best_val_r: float
    epochs_run: int
    stopped_early: bool
    history: tuple[EpochRecord, ...]
    weights: Path  # the chosen checkpoint's weights file
    weights_sha256: str


def autocast_for(device: torch.device) -> Callable[[], AbstractContextManager[Any]]:
    """bf16 autocast on a CUDA device with native bf16; otherwise nothing (float32)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext


def make_optimiser(model: nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel (one pass over all parameters; far faster than the per-tensor loop
    on a CPU, same update rule)."""
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)


def precision_name(device: torch.device) -> str:
    """How :func:`autocast_for` computes on ``device`` (recorded in the bundle)."""
    return "fp32" if autocast_for(device) is nullcontext else "bf16 autocast"


def mean_gene_r(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over genes of the Pearson r over all rows (genes constant in either are left out).

    One vectorised pass in float64 numpy on the host (a few ms for 90 slides x 20,820 genes; torch's
    intra-op threads are slower for these small reductions on a busy CPU).
    """
    p = pred.detach().cpu().numpy().astype(np.float64)
    t = target.detach().cpu().numpy().astype(np.float64)
    p -= p.mean(axis=0)
    t -= t.mean(axis=0)
    den = np.sqrt(np.einsum("ij,ij->j", p, p) * np.einsum("ij,ij->j", t, t))
    valid = den > 0
    if not valid.any():
        return float("nan")
    return float(np.mean(np.einsum("ij,ij->j", p, t)[valid] / den[valid]))


def predict_rows(
    model: nn.Module,
    features: torch.Tensor,
    rows: torch.Tensor,
    batch_size: int,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    autocast: Callable[[], AbstractContextManager[Any]],
) -> torch.Tensor:
    """(len(rows), genes) float32 predictions in inference mode."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            with autocast():
                out.append(forward(model, features[rows[start : start + batch_size]]).float())
    return torch.cat(out)


def _own_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _train_epoch(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    features: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> float:
    model.train()
    order = rows[torch.randperm(len(rows), generator=generator)]
    total = 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        with autocast():
            pred = train_forward(model, features[batch], generator)
        loss = F.mse_loss(pred.float(), targets[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(batch)
    return total / len(order)


def select(state: SelectionState, val_loss: float, val_r: float, recipe: Recipe) -> bool:
    """Update the selection state with one epoch; True when this epoch becomes the chosen checkpoint."""
    score = val_r if np.isfinite(val_r) else float("-inf")
    if recipe.selection is Selection.LOSS:
        chosen = val_loss < state.best_val_loss
    else:
        state.min_val_loss = min(state.min_val_loss, val_loss)
        margin = state.min_val_loss + recipe.delta
        fell_out = state.best_epoch > 0 and state.best_val_loss > margin
        chosen = val_loss <= margin and (state.best_epoch == 0 or fell_out or score > state.best_val_r)
    state.min_val_loss = min(state.min_val_loss, val_loss)
    if chosen:
        state.best_val_loss, state.best_val_r, state.since_best = val_loss, score, 0
    else:
        state.since_best += 1
    return chosen


def _fresh_fold_state(fold: int) -> FoldState:
    return FoldState(fold=fold)


def train_fold(
    data: TrainingData,
    fold: Fold,
    recipe: Recipe,
    spec: ModelSpec,
    device: torch.device,
    folder: Path,
    fingerprint: str,
    resume: bool = False,
    checkpoint_every: int = 1,
    progress: ProgressLike = None,
    on_epoch: EpochHook | None = None,
    tensors: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> FoldOutcome:
    """Train one fold (or continue it from its checkpoint), then predict its test slides."""
    if resume:
        finished = load_result(folder)
        if finished is not None:
            return _outcome_from_disk(folder, *finished)
    features, targets = tensors if tensors is not None else to_device(data, device)
    autocast = autocast_for(device)
    train_rows, val_rows, test_rows = (
        torch.as_tensor(data.rows_of(part), dtype=torch.long) for part in (fold.train, fold.val, fold.test)
    )
    model = build_model(spec.kind, spec.config, derived_seed(recipe.seed, fold.index, MODEL_INIT))
    if spec.init is not None:
        initialise_from(model, spec.init(fold.index), spec.init_same_genes, spec.init_source)
    model.to(device)
    optimiser = make_optimiser(model, recipe)
    generator = torch.Generator().manual_seed(derived_seed(recipe.seed, fold.index, DATA_ORDER))
    state, best_sha = _fresh_fold_state(fold.index), None
    saved = read_state(folder) if resume else None
    if saved is not None:
        if saved.get("fingerprint") != fingerprint:
            raise OptionError(
                "the checkpoints in the output folder were made with other data, folds or recipe",
                folder,
                fix="Run with the same inputs and options, or start afresh in a new --out folder.",
            )
        state, best_sha = restore(folder, saved, model, optimiser, generator)
    folder.mkdir(parents=True, exist_ok=True)

    bar = reporter(progress)
    bar.start(f"fold {fold.index}", recipe.max_epochs)
    bar.advance(state.epoch)
    while not state.stopped and state.epoch < recipe.max_epochs:
        start = time.perf_counter()
        train_loss = _train_epoch(
            model, optimiser, features, targets, train_rows, recipe.batch_size, generator, autocast
        )
        val_pred = predict_rows(model, features, val_rows, recipe.eval_batch_size, eval_forward, autocast)
        val_target = targets[val_rows]
        val_loss = float(F.mse_loss(val_pred, val_target))
        val_r = mean_gene_r(val_pred, val_target)
        chosen = select(state.selection, val_loss, val_r, recipe)
        state.epoch += 1
        if chosen:
            state.selection.best_epoch = state.epoch
            best_sha = save_best(folder, model, state.epoch)
        state.stopped = state.selection.since_best >= recipe.patience
        record = EpochRecord(
            fold.index, state.epoch, train_loss, val_loss, val_r, chosen, time.perf_counter() - start
        )
        state.history.append(record)
        last = state.stopped or state.epoch >= recipe.max_epochs
        if last or state.epoch % checkpoint_every == 0:
            save_last(folder, model, optimiser, generator, state, best_sha, fingerprint)
        bar.advance(1)
        if on_epoch is not None:
            on_epoch(record)
    bar.finish()
    assert best_sha is not None  # the first epoch is always chosen
    return _finish_fold(
        data, fold, recipe, spec, device, folder, state, best_sha, features, targets, test_rows, train_rows
    )


def to_device(data: TrainingData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.as_tensor(data.features, dtype=torch.float32).to(device),
        torch.as_tensor(data.targets, dtype=torch.float32).to(device),
    )


def _finish_fold(
    data: TrainingData,
    fold: Fold,
    recipe: Recipe,
    spec: ModelSpec,
    device: torch.device,
    folder: Path,
    state: FoldState,
    best_sha: str,
    features: torch.Tensor,
    targets: torch.Tensor,
    test_rows: torch.Tensor,
    train_rows: torch.Tensor,
) -> FoldOutcome:
    autocast = autocast_for(device)
    chosen = build_model(spec.kind, spec.config, 0)
    chosen.load_state_dict(load_best(folder, state.selection.best_epoch, best_sha), strict=True)
    chosen.to(device)
    predictions = predict_rows(chosen, features, test_rows, recipe.eval_batch_size, _own_forward, autocast)
    untrained = build_model(spec.kind, spec.config, derived_seed(recipe.seed, fold.index, UNTRAINED_BASELINE))
    untrained.to(device)
    baseline = predict_rows(untrained, features, test_rows, recipe.eval_batch_size, _own_forward, autocast)
    train_mean = targets[train_rows].double().mean(dim=0).float()
    arrays = {
        "test_rows": test_rows.numpy(),
        "predictions": predictions.cpu().numpy(),
        "untrained": baseline.cpu().numpy(),
        "train_mean": train_mean.cpu().numpy(),
    }
    selection = state.selection
    record = {
        "fold": fold.index,
        "best_epoch": selection.best_epoch,
        "best_val_loss": selection.best_val_loss,
        "best_val_r": selection.best_val_r,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped,
        "best_sha256": best_sha,
    }
    save_result(folder, arrays, record)
    return _outcome(folder, arrays, record, tuple(state.history))


def _outcome(
    folder: Path, arrays: Mapping[str, np.ndarray], record: Mapping[str, Any], history: Sequence[EpochRecord]
) -> FoldOutcome:
    return FoldOutcome(
        fold=int(record["fold"]),
        test_rows=np.asarray(arrays["test_rows"], dtype=np.int64),
        predictions=np.asarray(arrays["predictions"], dtype=np.float32),
        untrained=np.asarray(arrays["untrained"], dtype=np.float32),
        train_mean=np.asarray(arrays["train_mean"], dtype=np.float32),
        best_epoch=int(record["best_epoch"]),
        best_val_loss=float(record["best_val_loss"]),
        best_val_r=float(record["best_val_r"]),
        epochs_run=int(record["epochs_run"]),
        stopped_early=bool(record["stopped_early"]),
        history=tuple(history),
        weights=best_path(folder, int(record["best_epoch"])),
        weights_sha256=str(record["best_sha256"]),
    )


def _outcome_from_disk(folder: Path, arrays: dict[str, np.ndarray], record: dict[str, Any]) -> FoldOutcome:
    return _outcome(folder, arrays, record, read_history(folder))


@dataclass(frozen=True, eq=False)
class TrainingRun:
    """Every fold's outcome, in fold order, and the out-of-fold arrays assembled from them."""

    folds: tuple[FoldOutcome, ...]

    def out_of_fold(
        self, n_slides: int, n_genes: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(predictions, untrained, train_mean, fold) for every slide predicted by a test fold; rows of
        slides in no test fold are NaN with fold -1."""
        pred = np.full((n_slides, n_genes), np.nan, dtype=np.float32)
        untrained = pred.copy()
        mean = pred.copy()
        fold_of = np.full(n_slides, -1, dtype=np.int64)
        for outcome in self.folds:
            rows = outcome.test_rows
            pred[rows] = outcome.predictions
            untrained[rows] = outcome.untrained
            mean[rows] = outcome.train_mean[None, :]
            fold_of[rows] = outcome.fold
        return pred, untrained, mean, fold_of


def train_folds(
    data: TrainingData,
    folds: Sequence[Fold],
    recipe: Recipe,
    spec: ModelSpec,
    device: torch.device,
    work_dir: Path,
    fingerprint: str,
    resume: bool = False,
    checkpoint_every: int = 1,
    progress: ProgressLike = None,
    on_epoch: EpochHook | None = None,
) -> TrainingRun:
    """Train every fold in order (finished folds are read back when resuming)."""
    tensors = to_device(data, device)
    outcomes = tuple(
        train_fold(
            data,
            fold,
            recipe,
            spec,
            device,
            work_dir / f"fold-{fold.index}",
            fingerprint,
            resume=resume,
            checkpoint_every=checkpoint_every,
            progress=progress,
            on_epoch=on_epoch,
            tensors=tensors,
        )
        for fold in folds
    )
    return TrainingRun(outcomes)
