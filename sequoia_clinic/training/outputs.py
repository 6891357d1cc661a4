"""What a training run reports besides the bundle: the per-epoch log, the training curves, the fold summary.

The out-of-fold tables use the prediction-table layout of :mod:`sequoia_clinic.evaluation.io`, written by
the pipeline.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sequoia_clinic.training.checkpoint import EpochRecord  # noqa: E402
from sequoia_clinic.training.loop import FoldOutcome  # noqa: E402

EPOCH_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "val_r", "chosen", "seconds")


def epoch_table(outcomes: Sequence[FoldOutcome]) -> pd.DataFrame:
    rows: list[EpochRecord] = [record for outcome in outcomes for record in outcome.history]
    return pd.DataFrame([[getattr(r, c) for c in EPOCH_COLUMNS] for r in rows], columns=list(EPOCH_COLUMNS))


def fold_summary(outcome: FoldOutcome, n_train: int, n_val: int, n_test: int) -> dict[str, Any]:
    return {
        "fold": outcome.fold,
        "best_epoch": outcome.best_epoch,
        "best_val_loss": outcome.best_val_loss,
        "best_val_r": outcome.best_val_r,
        "epochs_run": outcome.epochs_run,
        "stopped_early": outcome.stopped_early,
        "patients": {"train": n_train, "val": n_val, "test": n_test},
    }


def training_curves(epochs: pd.DataFrame, selection: str) -> bytes:
    """Validation MSE and mean r per epoch and fold (training MSE dashed), chosen epochs marked."""
    fig = Figure(figsize=(9.0, 3.4))
    ax_loss, ax_r = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colours = matplotlib.colormaps["tab10"]
    for fold, rows in epochs.groupby("fold"):
        colour = colours(int(fold) % 10)
        ax_loss.plot(rows["epoch"], rows["val_loss"], color=colour, label=f"fold {fold}")
        ax_loss.plot(rows["epoch"], rows["train_loss"], color=colour, linestyle="--", linewidth=0.8)
        ax_r.plot(rows["epoch"], rows["val_r"], color=colour)
        chosen = rows[rows["chosen"]].tail(1)
        ax_loss.scatter(chosen["epoch"], chosen["val_loss"], color=colour, marker="o", zorder=3)
        ax_r.scatter(chosen["epoch"], chosen["val_r"], color=colour, marker="o", zorder=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("MSE (validation solid, training dashed)")
    ax_loss.set_yscale("log")
    ax_r.set_xlabel("epoch")
    ax_r.set_ylabel("validation mean Pearson r over genes")
    ax_loss.legend(fontsize=7, frameon=False)
    fig.suptitle(f"Training curves (dots: chosen checkpoint, rule '{selection}')", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130, metadata={"Software": None})
    return buffer.getvalue()
