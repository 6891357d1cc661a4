"""Per-fold training checkpoints: everything needed to continue a run exactly, with no pickles.

A fold's work folder holds:

* ``last.safetensors``: the model (``model.*``), the AdamW state (``optim.<param>.<name>``) and the data
  order RNG state (``rng``, a ``torch.Generator`` state) after the last completed epoch;
* ``best-<epoch>.safetensors``: the weights of the chosen checkpoint (the fold's model in the bundle);
  files of epochs chosen after the last saved checkpoint are removed once a newer ``state.json`` exists;
* ``state.json``: epoch, the per-epoch history, the selection state, the optimiser's param groups, the run
  fingerprint and the sha256 of both weight files. It is written last (atomically), so a run killed while
  writing resumes from the previous complete checkpoint;
* ``result.npz`` + ``done.json`` once the fold is finished (test and baseline predictions).

Weight files are read only after their sha256 matches ``state.json`` (safetensors, never a pickle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sequoia_clinic.errors import ChecksumError, OptionError
from sequoia_clinic.fileio import atomic_path, sha256_file, write_json_atomic

STATE_FORMAT = "sequoia-clinic-train-state/1"


@dataclass(frozen=True)
class EpochRecord:
    fold: int
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_r: float  # mean over genes of the Pearson r on the whole validation set
    chosen: bool  # this epoch became the fold's checkpoint
    seconds: float


@dataclass
class SelectionState:
    """The checkpoint-selection state of a fold (mutable while the fold trains)."""

    min_val_loss: float = float("inf")
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    best_val_r: float = float("-inf")
    since_best: int = 0


@dataclass
class FoldState:
    fold: int
    epoch: int = 0  # completed epochs
    stopped: bool = False
    selection: SelectionState = field(default_factory=SelectionState)
    history: list[EpochRecord] = field(default_factory=list)


def _write_weights(path: Path, tensors: Mapping[str, torch.Tensor], note: str) -> str:
    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={"content": note},
        )
        return sha256_file(tmp)


def _read_weights(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    if not path.is_file() or sha256_file(path) != sha256:
        raise ChecksumError(
            "a training checkpoint is missing or does not match its record",
            path,
            fix="Start afresh without --resume (delete the output folder).",
        )
    return load_file(str(path), device="cpu")


def best_path(folder: Path, epoch: int) -> Path:
    return folder / f"best-{epoch:04d}.safetensors"


def save_best(folder: Path, model: torch.nn.Module, epoch: int) -> str:
    return _write_weights(best_path(folder, epoch), model.state_dict(), "best checkpoint")


def _optimiser_tensors(
    optimiser: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state = optimiser.state_dict()
    tensors = {
        f"optim.{param}.{name}": value
        for param, values in state["state"].items()
        for name, value in values.items()
        if isinstance(value, torch.Tensor)
    }
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]
    ]
    return tensors, groups


def save_last(
    folder: Path,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator,
    fold_state: FoldState,
    best_sha256: str | None,
    fingerprint: str,
) -> None:
    """Write the epoch checkpoint, then ``state.json`` naming it (atomic, in that order)."""
    optim_tensors, groups = _optimiser_tensors(optimiser)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | optim_tensors
    tensors["rng"] = generator.get_state()
    last_sha = _write_weights(folder / "last.safetensors", tensors, "epoch checkpoint")
    write_json_atomic(
        folder / "state.json",
        {
            "format": STATE_FORMAT,
            "fingerprint": fingerprint,
            "fold": fold_state.fold,
            "epoch": fold_state.epoch,
            "stopped": fold_state.stopped,
            "selection": _finite_json(asdict(fold_state.selection)),
            "history": [_finite_json(asdict(r)) for r in fold_state.history],
            "param_groups": groups,
            "last_sha256": last_sha,
            "best_sha256": best_sha256,
        },
    )
    keep = best_path(folder, fold_state.selection.best_epoch).name
    for stale in folder.glob("best-*.safetensors"):
        if stale.name != keep:
            stale.unlink()


def _finite_json(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinities: encode them as strings (decoded by :func:`_from_json`)."""
    return {k: (repr(v) if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}


def _from_json(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if v in ("inf", "-inf", "nan") else v) for k, v in values.items()}


def read_state(folder: Path) -> dict[str, Any] | None:
    path = folder / "state.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        raise OptionError(
            "a training checkpoint record is unreadable", path, fix="Start afresh without --resume."
        ) from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise OptionError(
            "not a training checkpoint of this version", path, fix="Start afresh without --resume."
        )
    return data


def restore(
    folder: Path,
    data: dict[str, Any],
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[FoldState, str | None]:
    """Load model, optimiser and RNG from ``last.safetensors`` (sha256-checked); returns the fold state."""
    tensors = _read_weights(folder / "last.safetensors", data["last_sha256"])
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True
    )
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param, name = key.split(".", 2)
            per_param.setdefault(int(param), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in data["param_groups"]]
    optimiser.load_state_dict({"state": per_param, "param_groups": groups})
    generator.set_state(tensors["rng"])
    state = FoldState(
        fold=int(data["fold"]),
        epoch=int(data["epoch"]),
        stopped=bool(data["stopped"]),
        selection=SelectionState(**_from_json(data["selection"])),
        history=[EpochRecord(**_from_json(r)) for r in data["history"]],
    )
    return state, data.get("best_sha256")


def read_history(folder: Path) -> tuple[EpochRecord, ...]:
    """The per-epoch history recorded in the fold's last checkpoint (empty when there is none)."""
    data = read_state(folder)
    return () if data is None else tuple(EpochRecord(**_from_json(r)) for r in data["history"])


def load_best(folder: Path, epoch: int, sha256: str) -> dict[str, torch.Tensor]:
    return _read_weights(best_path(folder, epoch), sha256)


def save_result(folder: Path, arrays: Mapping[str, np.ndarray], record: dict[str, Any]) -> None:
    """Store a finished fold's predictions (``result.npz``, no pickles) and ``done.json`` naming its sha256."""
    with atomic_path(folder / "result.npz") as tmp:
        payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        with open(tmp, "wb") as handle:
            np.savez(handle, **payload)
        digest = sha256_file(tmp)
    write_json_atomic(folder / "done.json", {**record, "result_sha256": digest})


def load_result(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    done = folder / "done.json"
    if not done.is_file():
        return None
    record = json.loads(done.read_text("utf-8"))
    path = folder / "result.npz"
    if not path.is_file() or sha256_file(path) != record.get("result_sha256"):
        raise ChecksumError(
            "a finished fold's predictions are missing or damaged", path, fix="Start afresh without --resume."
        )
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    return arrays, record
