"""Calibrating on slide-predicted expression: leakage check against a bundle's training splits, and shrinkage.

* :func:`check_out_of_fold`: with ``calibrate --training-splits splits.json`` (written by ``train`` beside a
  bundle: ``{"fold_0": {"train": [ids], "val": [ids], "test": [ids]}, ...}``), every row of a patient the
  bundle was trained on must be an out-of-fold prediction: the table's ``fold`` column names the fold whose
  *test* set held that patient (as in ``train``'s ``oof.parquet``). Any other row of a training patient is an
  in-sample prediction (optimistically accurate) and the table is refused, with counts only (no IDs).
* :func:`expression_shrinkage`: with ``calibrate --measured TABLE`` (measured expression of the same
  patients), the per-gene SD ratio predicted/measured and correlation, summarised in the model and its card.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sequoia_clinic.errors import InputPathError, TableError
from sequoia_clinic.survival.cohort import match_genes, require_columns
from sequoia_clinic.survival.records import ExpressionShrinkage

FOLD_COLUMN = "fold"


def read_splits(path: Path) -> dict[int, dict[str, set[str]]]:
    """Fold number -> {"train"|"val"|"test": patient ids} from a ``splits.json``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputPathError("splits file not found", path, "Pass the bundle's splits.json.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputPathError(f"not a JSON file ({type(exc).__name__})", path, "Pass splits.json.") from None
    if not isinstance(data, dict) or not data:
        raise InputPathError("the splits file must be an object of folds", path, "Pass splits.json.")
    folds: dict[int, dict[str, set[str]]] = {}
    for key, parts in data.items():
        number = str(key).removeprefix("fold_")
        if not number.isdigit() or not isinstance(parts, dict):
            raise InputPathError(
                f"'{key}' is not a fold_<k> object", path, "Pass the splits.json of `train`."
            )
        folds[int(number)] = {
            part: {str(i) for i in parts.get(part, []) or []} for part in ("train", "val", "test")
        }
    return folds


def check_out_of_fold(frame: pd.DataFrame, splits: Path, id_col: str, path: Path | None) -> int:
    """Refuse in-sample predictions of the bundle's training patients; returns the out-of-fold rows found."""
    require_columns(frame, [id_col], path, what="patient id column")
    folds = read_splits(splits)
    trained = set().union(*(p["train"] | p["val"] | p["test"] for p in folds.values()))
    ids = frame[id_col].astype(str).str.strip().to_numpy()
    in_training = np.array([i in trained for i in ids])
    if not in_training.any():
        return 0
    if FOLD_COLUMN not in frame.columns:
        raise TableError(
            f"{int(in_training.sum())} of {len(ids)} rows are patients the bundle was trained on, and the table "
            "has no 'fold' column: their predictions are in-sample (optimistically accurate)",
            path,
            "Use train's out-of-fold predictions (oof.parquet) for those patients, or drop them.",
        )
    fold = pd.to_numeric(frame[FOLD_COLUMN], errors="coerce").to_numpy()
    held_out = np.array(
        [
            bool(np.isfinite(k)) and int(k) in folds and pid in folds[int(k)]["test"]
            for pid, k in zip(ids, fold, strict=True)
        ]
    )
    leaked = int((in_training & ~held_out).sum())
    if leaked:
        raise TableError(
            f"{leaked} of {len(ids)} rows are in-sample predictions of patients the bundle was trained on "
            "(their 'fold' does not hold them in its test set)",
            path,
            "Use train's out-of-fold predictions (oof.parquet) for those patients, or drop them.",
        )
    return int(in_training.sum())


def expression_shrinkage(
    predicted: pd.DataFrame,
    measured: pd.DataFrame,
    genes: Sequence[str],
    id_col: str,
    path: Path | None,
    measured_path: Path | None,
) -> ExpressionShrinkage:
    """SD(predicted) / SD(measured) and the correlation per gene over the patients in both tables."""
    require_columns(predicted, [id_col], path, what="patient id column")
    require_columns(measured, [id_col], measured_path, what="patient id column")
    pred_cols = match_genes(predicted, genes, path).columns
    meas_cols = match_genes(measured, genes, measured_path).columns
    left = predicted.assign(_id=predicted[id_col].astype(str)).drop_duplicates("_id").set_index("_id")
    right = measured.assign(_id=measured[id_col].astype(str)).drop_duplicates("_id").set_index("_id")
    common = left.index.intersection(right.index)
    if len(common) < 3:
        raise TableError(
            f"only {len(common)} patient(s) are in both the table and the measured table",
            measured_path,
            f"Match the '{id_col}' values of the two tables.",
        )
    ratios, correlations = [], []
    for gene in genes:
        p = pd.to_numeric(left.loc[common, pred_cols[gene]], errors="coerce").to_numpy(dtype=float)
        m = pd.to_numeric(right.loc[common, meas_cols[gene]], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(p) & np.isfinite(m)
        if ok.sum() < 3 or np.std(m[ok]) == 0:
            continue
        ratios.append(float(np.std(p[ok]) / np.std(m[ok])))
        if np.std(p[ok]) > 0:
            correlations.append(float(np.corrcoef(p[ok], m[ok])[0, 1]))
    if not ratios:
        raise TableError("no gene varies in the measured table", measured_path, "Check the measured values.")
    return ExpressionShrinkage(
        n_patients=int(len(common)),
        n_genes=len(ratios),
        median_sd_ratio=float(np.median(ratios)),
        min_sd_ratio=float(np.min(ratios)),
        max_sd_ratio=float(np.max(ratios)),
        median_correlation=float(np.median(correlations)) if correlations else None,
    )
