"""Prediction tables on disk: the layout ``train`` writes and ``evaluate`` reads.

A prediction table (Parquet or CSV) has one row per slide (or per patient) and the columns ``patient_id``
(required), ``slide_id`` (optional; ``wsi_file_name`` is accepted for it), ``fold`` (optional: the fold
whose test set held the row), then one numeric column per gene, named by its symbol. Other text columns
are ignored and listed. ``train`` also stores its run id in the Parquet schema metadata
(:data:`TRAINING_ID_KEY`), so ``evaluate`` can tell whether predictions belong to a bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sequoia_clinic.errors import InputPathError, TableError
from sequoia_clinic.evaluation.align import Predictions
from sequoia_clinic.fileio import atomic_path

TRAINING_ID_KEY = b"sequoia_clinic.training_id"
ID_COLUMNS = ("patient_id", "slide_id", "fold")
SLIDE_ALIASES = ("wsi_file_name",)
SUFFIXES = (".parquet", ".csv", ".tsv")


@dataclass(frozen=True, eq=False)
class PredictionFile:
    predictions: Predictions
    training_id: str | None
    ignored_columns: tuple[str, ...]


def _read_frame(path: Path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"{what} not found", path, fix="Check the path.")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TableError(f"unsupported {what} type '{suffix}'", path, fix="Use .parquet, .csv or .tsv.")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(
            path, sep="\t" if suffix == ".tsv" else ",", dtype={"patient_id": str, "slide_id": str}
        )
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise TableError(
            f"cannot read the {what} ({type(exc).__name__})", path, fix="Supply an intact table."
        ) from None


def _training_id(path: Path) -> str | None:
    if path.suffix.lower() != ".parquet":
        return None
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    value = metadata.get(TRAINING_ID_KEY)
    return value.decode("utf-8") if value is not None else None


def read_predictions(path: Path, what: str = "prediction table") -> PredictionFile:
    """Read and check a prediction table (ids, finite numeric gene columns)."""
    path = Path(path)
    frame = _read_frame(path, what)
    for alias in SLIDE_ALIASES:
        if alias in frame.columns and "slide_id" not in frame.columns:
            frame = frame.rename(columns={alias: "slide_id"})
    if "patient_id" not in frame.columns:
        raise TableError(
            f"the {what} has no patient_id column", path, fix="Add one (the patient of each row)."
        )
    if frame.empty:
        raise TableError(f"the {what} has no rows", path)
    patients = frame["patient_id"].astype(str).str.strip()
    if (patients == "").any() or frame["patient_id"].isna().any():
        raise TableError(f"the {what} has empty patient_id values", path)
    slide_ids = None
    if "slide_id" in frame.columns:
        slide_ids = frame["slide_id"].astype(str).str.strip()
        if slide_ids.duplicated().any():
            raise TableError(
                f"the {what} has duplicate slide_id {slide_ids[slide_ids.duplicated()].iloc[0]}", path
            )
    elif patients.duplicated().any():
        raise TableError(
            f"the {what} has several rows for patient {patients[patients.duplicated()].iloc[0]} but no slide_id",
            path,
            fix="Add a slide_id column, or give one row per patient.",
        )
    folds = None
    if "fold" in frame.columns:
        try:
            folds = frame["fold"].astype(np.int64).to_numpy()
        except (TypeError, ValueError):
            raise TableError(f"the {what}'s fold column is not integer", path) from None
    rest = [c for c in frame.columns if c not in ID_COLUMNS]
    genes = [
        str(c)
        for c in rest
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    ignored = tuple(str(c) for c in rest if str(c) not in set(genes))
    if not genes:
        raise TableError(f"the {what} has no numeric gene columns", path)
    if len(set(genes)) != len(genes):
        raise TableError(f"the {what} has duplicate gene columns", path)
    values = frame[genes].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        column = genes[int(np.where(~np.isfinite(values))[1][0])]
        raise TableError(f"the {what} has NaN or infinite values (first in column {column})", path)
    predictions = Predictions(
        patients=tuple(patients),
        slide_ids=None if slide_ids is None else tuple(slide_ids),
        folds=folds,
        genes=tuple(genes),
        values=values,
    )
    return PredictionFile(predictions, _training_id(path), ignored)


def prediction_frame(
    patients: Sequence[str],
    slide_ids: Sequence[str],
    folds: Sequence[int],
    genes: Sequence[str],
    values: np.ndarray,
) -> pd.DataFrame:
    ids = pd.DataFrame(
        {"slide_id": list(slide_ids), "patient_id": list(patients), "fold": np.asarray(folds, dtype=np.int64)}
    )
    data = pd.DataFrame(np.asarray(values, dtype=np.float32), columns=list(genes))
    return pd.concat([ids, data], axis=1)


def write_prediction_table(frame: pd.DataFrame, target: Path, training_id: str | None) -> None:
    """Write ``frame`` as Parquet atomically, with the training run id in the schema metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if training_id is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), TRAINING_ID_KEY: training_id.encode()}
        )
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
