"""Predictions and measured expression, aligned on one unit of analysis (patient or slide).

* ``patient`` (default): the slides of one patient are averaged — predictions and, for a slide-keyed
  measured table, measured values too — so each patient counts once. A patient's fold is the fold of its
  slides (training keeps every patient in one fold).
* ``slide``: one unit per prediction row, as the reference does. When the measured table is keyed by
  patient, every slide of a patient gets the patient's values, so patients with two slides count twice
  (pseudo-replication: n and the p-values are inflated).

Records here are plain arrays; reading and writing files is done by the caller (``evaluation.io``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from sequoia_clinic.errors import TableError


class Unit(StrEnum):
    PATIENT = "patient"
    SLIDE = "slide"


@dataclass(frozen=True, eq=False)
class Predictions:
    """Model (or baseline) predictions: one row per slide (or per patient), genes in columns."""

    patients: tuple[str, ...]
    slide_ids: tuple[str, ...] | None  # None: rows are patients
    folds: np.ndarray | None  # (rows,) int, the fold whose test set held the row; None when unknown
    genes: tuple[str, ...]
    values: np.ndarray  # (rows, genes) float64

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.patients), len(self.genes)):
            raise ValueError("predictions: values must be (rows, genes)")


@dataclass(frozen=True, eq=False)
class Measured:
    """Measured expression: one row per patient (``slide_ids`` None) or per slide."""

    patients: tuple[str, ...]
    slide_ids: tuple[str, ...] | None
    genes: tuple[str, ...]
    values: np.ndarray  # (rows, genes) float64


@dataclass(frozen=True, eq=False)
class Aligned:
    """Everything on the same units and genes, ready for the statistics."""

    unit: Unit
    unit_ids: tuple[str, ...]
    genes: tuple[str, ...]
    measured: np.ndarray  # (units, genes)
    predicted: np.ndarray
    untrained: np.ndarray | None
    train_mean: np.ndarray | None
    folds: np.ndarray | None  # (units,) int
    n_patients: int
    n_slides: int  # prediction rows used


def _group_mean(keys: Sequence[str], values: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Mean of the rows of each key, keys sorted."""
    order = sorted(set(keys))
    index = {k: i for i, k in enumerate(order)}
    codes = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    sums = np.zeros((len(order), values.shape[1]))
    np.add.at(sums, codes, values)
    counts = np.bincount(codes, minlength=len(order)).astype(np.float64)
    return tuple(order), sums / counts[:, None]


def _gene_columns(source: Predictions | Measured, genes: Sequence[str]) -> np.ndarray:
    index = {g: i for i, g in enumerate(source.genes)}
    return source.values[:, [index[g] for g in genes]]


def _row_keys(pred: Predictions) -> list[str]:
    if pred.slide_ids is not None:
        return list(pred.slide_ids)
    return list(pred.patients)


def _baseline_rows(baseline: Predictions, pred: Predictions, genes: Sequence[str], what: str) -> np.ndarray:
    """The baseline's values in the prediction rows' order (matched by slide, else by patient)."""
    keys = _row_keys(pred)
    base_keys = _row_keys(baseline)
    where = {k: i for i, k in enumerate(base_keys)}
    missing = [k for k in keys if k not in where]
    if missing:
        raise TableError(
            f"the {what} has no row for {len(missing)} of the predicted units (first: {missing[0]})",
            fix="Use the baseline file written by the same training run.",
        )
    absent = [g for g in genes if g not in set(baseline.genes)]
    if absent:
        raise TableError(f"the {what} lacks {len(absent)} predicted gene(s), e.g. {absent[0]}")
    return _gene_columns(baseline, genes)[[where[k] for k in keys]]


def patient_folds(patients: Sequence[str], folds: np.ndarray) -> dict[str, int]:
    """The fold of each patient; a patient whose slides sit in two folds is refused."""
    out: dict[str, int] = {}
    for patient, fold in zip(patients, folds.tolist(), strict=True):
        if out.setdefault(patient, int(fold)) != int(fold):
            raise TableError(
                f"patient {patient} has slides in folds {out[patient]} and {fold}",
                fix="Each patient must be predicted by one fold (patient-grouped cross-validation).",
            )
    return out


def align(
    predictions: Predictions,
    measured: Measured,
    unit: Unit,
    untrained: Predictions | None = None,
    train_mean: Predictions | None = None,
) -> Aligned:
    """Put predictions, baselines and measured values on the same units and the shared genes."""
    measured_genes = set(measured.genes)
    genes = tuple(g for g in predictions.genes if g in measured_genes)
    if not genes:
        raise TableError(
            "the predictions and the measured table share no gene",
            fix="Check the gene symbols (the same alias table maps both) and the rna_ prefix.",
        )
    pred = _gene_columns(predictions, genes)
    bases = {
        name: None if base is None else _baseline_rows(base, predictions, genes, name)
        for name, base in (("untrained baseline", untrained), ("train-mean baseline", train_mean))
    }
    meas_values = _gene_columns(measured, genes)
    folds = predictions.folds

    if unit is Unit.PATIENT:
        unit_ids, pred = _group_mean(predictions.patients, pred)
        bases = {k: None if v is None else _group_mean(predictions.patients, v)[1] for k, v in bases.items()}
        if measured.slide_ids is not None:
            meas_ids, meas_values = _group_mean(measured.patients, meas_values)
        else:
            meas_ids = measured.patients
        if folds is not None:
            by_patient = patient_folds(predictions.patients, folds)
            folds = np.asarray([by_patient[p] for p in unit_ids], dtype=np.int64)
        row_of = {k: i for i, k in enumerate(meas_ids)}
        unit_keys = list(unit_ids)
    else:
        unit_ids = tuple(_row_keys(predictions))
        if measured.slide_ids is not None and predictions.slide_ids is not None:
            row_of = {k: i for i, k in enumerate(measured.slide_ids)}
            unit_keys = list(predictions.slide_ids)
        else:  # patient-level measured values repeated for every slide of the patient
            row_of = {k: i for i, k in enumerate(measured.patients)}
            unit_keys = list(predictions.patients)

    keep = np.asarray([k in row_of for k in unit_keys], dtype=bool)
    if not keep.any():
        raise TableError(
            "no predicted unit has measured expression",
            fix="The predictions' patient_id/slide_id values must match the expression table's.",
        )
    measured_rows = meas_values[[row_of[k] for k, ok in zip(unit_keys, keep, strict=True) if ok]]
    kept_ids = tuple(u for u, ok in zip(unit_ids, keep, strict=True) if ok)
    kept_patients = (
        kept_ids
        if unit is Unit.PATIENT
        else tuple(p for p, ok in zip(predictions.patients, keep, strict=True) if ok)
    )
    kept_set = set(kept_patients)
    return Aligned(
        unit=unit,
        unit_ids=kept_ids,
        genes=genes,
        measured=measured_rows,
        predicted=pred[keep],
        untrained=None if bases["untrained baseline"] is None else bases["untrained baseline"][keep],
        train_mean=None if bases["train-mean baseline"] is None else bases["train-mean baseline"][keep],
        folds=None if folds is None else folds[keep],
        n_patients=len(kept_set),
        n_slides=int(keep.sum())
        if unit is Unit.SLIDE
        else sum(1 for p in predictions.patients if p in kept_set),
    )
