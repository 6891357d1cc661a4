"""Training epoch time of the full-size ViS: ``train``'s loop vs a loop written the way the reference's is.

Same model (the published ViS: 1024-d input, 100 tokens, depth 6, 16 heads, 20,820 genes; same initial
weights), same synthetic data, batch 16, AdamW lr 1e-3, on the CPU (or ``--device cuda``).

* **reference-style** (sequoia-pub ``src/vit.py::train`` and ``he2rna.py::compute_correlations``, re-written
  from their description): each batch of each phase computes the MSE, a sklearn MAE and the batch's mean
  per-gene Pearson r with a Python loop of ``np.unique`` + ``np.corrcoef`` over the 20,820 genes (training
  batches too); validation runs under ``torch.set_grad_enabled(False)``, not inference mode, with the
  module's own forward (one small matrix product per head);
* **ours** (``sequoia_clinic.training.loop``): the training pass computes the same ViS function with the
  16 heads fused (same parameters, outputs equal to ~1e-6), then the whole validation set is predicted in
  inference mode and scored once, vectorised over genes; the epoch checkpoint (model + AdamW state +
  RNG, for ``--resume``; ~645 MB at full size) is timed separately and included in "ours, with checkpoint".

Also timed alone: the validation metric on the same predictions (per-batch loop vs one vectorised pass).
On 2 CPU cores a full-size step takes tens of seconds, so the default epoch is small (48 training and
32 validation slides); the per-batch times also give the estimate for a TCGA-BRCA-sized epoch (812
training, 90 validation slides), printed last.

    .venv/bin/python benches/bench_train.py [--train-slides 48] [--val-slides 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_absolute_error

from sequoia_clinic.aggregator.configs import VisConfig
from sequoia_clinic.training.checkpoint import FoldState, save_best, save_last
from sequoia_clinic.training.data import Recipe
from sequoia_clinic.training.loop import _train_epoch, autocast_for, make_optimiser, mean_gene_r, predict_rows
from sequoia_clinic.training.model import build_model, eval_forward

PUBLISHED = VisConfig(
    num_outputs=20820, input_dim=1024, depth=6, nheads=16, dimensions_f=64, dimensions_s=64, dimensions_c=64
)
BRCA_TRAIN, BRCA_VAL = 812, 90  # slides of one TCGA-BRCA fold (762 + 85 patients, ~1.07 slides each)


def reference_correlation(labels: np.ndarray, preds: np.ndarray) -> float:
    """The reference's per-batch score: a Python loop over genes (np.unique + np.corrcoef)."""
    metrics = []
    for i in range(labels.shape[1]):
        y_true = labels[:, i]
        if len(np.unique(y_true)) > 1:
            metrics.append(np.corrcoef(y_true, preds[:, i])[0, 1])
    values = np.asarray(metrics)
    return float(np.mean(values[~np.isnan(values)]))


def reference_epoch(model, optimiser, x, y, train_rows, val_rows, batch, generator, timings) -> None:
    for phase, rows in (("train", train_rows), ("val", val_rows)):
        model.train() if phase == "train" else model.eval()
        order = rows[torch.randperm(len(rows), generator=generator)] if phase == "train" else rows
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            t0 = time.perf_counter()
            with torch.set_grad_enabled(phase == "train"):
                pred = model(x[idx])
            loss = F.mse_loss(pred, y[idx])
            t1 = time.perf_counter()
            truth, guess = y[idx].detach().cpu().numpy(), pred.detach().cpu().numpy()
            mean_absolute_error(truth, guess)
            reference_correlation(truth, guess)
            t2 = time.perf_counter()
            if phase == "train":
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            t3 = time.perf_counter()
            timings.setdefault(f"{phase}_model", []).append((t1 - t0) + (t3 - t2))
            timings.setdefault(f"{phase}_metric", []).append(t2 - t1)


def our_epoch(model, optimiser, x, y, train_rows, val_rows, batch, generator, device, timings) -> None:
    autocast = autocast_for(device)
    t0 = time.perf_counter()
    _train_epoch(model, optimiser, x, y, train_rows, batch, generator, autocast)
    t1 = time.perf_counter()
    pred = predict_rows(model, x, val_rows, 64, eval_forward, autocast)
    float(F.mse_loss(pred, y[val_rows]))
    t2 = time.perf_counter()
    mean_gene_r(pred, y[val_rows])
    t3 = time.perf_counter()
    timings["train"] = t1 - t0
    timings["val_model"] = t2 - t1
    timings["val_metric"] = t3 - t2


def checkpoint_seconds(model, optimiser, generator) -> float:
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        best = save_best(Path(folder), model, 1)
        save_last(Path(folder), model, optimiser, generator, FoldState(0), best, "bench")
        return time.perf_counter() - t0


def metric_alone(n_val: int, batch: int, genes: int, rng: np.random.Generator) -> tuple[float, float]:
    truth = rng.normal(5, 1, size=(n_val, genes)).astype(np.float32)
    guess = (truth + rng.normal(0, 1, size=truth.shape)).astype(np.float32)
    t0 = time.perf_counter()
    for start in range(0, n_val, batch):
        reference_correlation(truth[start : start + batch], guess[start : start + batch])
    t1 = time.perf_counter()
    mean_gene_r(torch.from_numpy(guess), torch.from_numpy(truth))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def one_epoch(name, args, x, y, train_rows, val_rows, device) -> dict[str, float]:
    """One timed epoch of ``name`` from the same initial weights (seed 0), after one untimed warm-up step."""
    model = build_model("vis", PUBLISHED, 0).to(device)
    if name == "ours":
        optimiser = make_optimiser(model, Recipe(lr=1e-3))
    else:  # the reference's optimiser: torch.optim.AdamW(model.parameters(), lr=args.lr)
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    _train_epoch(
        model, optimiser, x, y, train_rows[: args.batch], args.batch, generator, autocast_for(device)
    )
    timings: dict = {}
    t0 = time.perf_counter()
    if name == "ours":
        our_epoch(model, optimiser, x, y, train_rows, val_rows, args.batch, generator, device, timings)
    else:
        reference_epoch(model, optimiser, x, y, train_rows, val_rows, args.batch, generator, timings)
    total = time.perf_counter() - t0
    if name == "ours":
        timings["checkpoint"] = checkpoint_seconds(model, optimiser, generator)
    return {"epoch": total, **{k: (sum(v) if isinstance(v, list) else v) for k, v in timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-slides", type=int, default=48)
    parser.add_argument("--val-slides", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds (reference, ours), median.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument("--metric-only", action="store_true", help="Only time the validation metric.")
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    if args.metric_only:
        for _ in range(3):
            loop_s, vector_s = metric_alone(BRCA_VAL, args.batch, PUBLISHED.num_outputs, rng)
            print(
                f"validation metric alone: per-batch loop {loop_s:.2f} s, vectorised {vector_s * 1000:.1f} ms: "
                f"{loop_s / vector_s:.0f}x"
            )
        return
    n = args.train_slides + args.val_slides
    x = torch.from_numpy(rng.normal(size=(n, 100, 1024)).astype(np.float32)).to(device)
    y = torch.from_numpy(rng.normal(5, 2, size=(n, PUBLISHED.num_outputs)).astype(np.float32)).to(device)
    train_rows = torch.arange(args.train_slides)
    val_rows = torch.arange(args.train_slides, n)
    print(
        f"ViS {PUBLISHED.to_dict()}, batch {args.batch}, {args.train_slides} training + {args.val_slides} "
        f"validation slides, {device}, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds"
    )
    rounds: dict[str, list[dict[str, float]]] = {"reference-style": [], "ours": []}
    for index in range(args.rounds):
        for name in rounds:
            result = one_epoch(name, args, x, y, train_rows, val_rows, device)
            rounds[name].append(result)
            print(f"round {index + 1} {name:16s} " + "  ".join(f"{k} {v:.2f}" for k, v in result.items()))
    ratios = [r["epoch"] / o["epoch"] for r, o in zip(rounds["reference-style"], rounds["ours"], strict=True)]
    with_ckpt = [
        r["epoch"] / (o["epoch"] + o["checkpoint"])
        for r, o in zip(rounds["reference-style"], rounds["ours"], strict=True)
    ]
    ref = {
        k: float(np.median([r[k] for r in rounds["reference-style"]])) for k in rounds["reference-style"][0]
    }
    ours = {k: float(np.median([r[k] for r in rounds["ours"]])) for k in rounds["ours"][0]}
    print(
        f"\nepoch speed-up per round: {', '.join(f'{v:.2f}x' for v in ratios)} (median {np.median(ratios):.2f}x; "
        f"with our checkpoint write {np.median(with_ckpt):.2f}x)"
    )
    loop_s, vector_s = metric_alone(BRCA_VAL, args.batch, PUBLISHED.num_outputs, rng)
    print(
        f"validation metric alone ({BRCA_VAL} slides x 20,820 genes): per-batch loop {loop_s:.2f} s, "
        f"vectorised {vector_s * 1000:.1f} ms: {loop_s / vector_s:.0f}x"
    )
    train_batches, val_batches = -(-BRCA_TRAIN // args.batch), -(-BRCA_VAL // args.batch)
    bench_train, bench_val = -(-args.train_slides // args.batch), -(-args.val_slides // args.batch)
    ref_brca = (
        train_batches * (ref["train_model"] + ref["train_metric"]) / bench_train
        + val_batches * (ref["val_model"] + ref["val_metric"]) / bench_val
    )
    ours_brca = (
        ours["train"] / bench_train * train_batches
        + ours["val_model"] / args.val_slides * BRCA_VAL
        + vector_s
    )
    print(
        f"TCGA-BRCA-sized epoch (estimate from the medians): reference-style {ref_brca / 60:.1f} min, ours "
        f"{ours_brca / 60:.1f} min: {ref_brca / ours_brca:.2f}x ({ref_brca / (ours_brca + ours['checkpoint']):.2f}x "
        f"with the {ours['checkpoint']:.1f} s checkpoint)"
    )
    if args.json is not None:
        summary = {
            "rounds": rounds,
            "epoch_ratios": ratios,
            "metric_alone": {"loop_s": loop_s, "vectorised_s": vector_s},
            "brca_estimate": {"reference_s": ref_brca, "ours_s": ours_brca},
        }
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
