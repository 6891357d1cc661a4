"""evaluate: predictions + measured expression → per-gene statistics, rules, figures (and the bundle's record).

:func:`evaluate_predictions` is a pure function of an :class:`EvaluateRequest` and the :class:`Settings`
(apart from the clock in the stored record). Everything is read and checked before anything is written;
the outputs (``genes.csv``, ``genes.parquet``, ``summary.json``, ``r_histogram.png``, ``top_genes.png``)
are moved into the output folder together. The untrained and training-mean baselines are read from
``--baseline``/``--mean-baseline``, or found beside the predictions under the names ``train`` writes.

With ``--bundle``, the measured table's transform defaults to the one the bundle was trained with, and the
per-gene table is stored in the bundle (``evaluation-<hash>.parquet``, sha256 in the manifest) when the
predictions are that bundle's own out-of-fold predictions (same training id); predictions from anything
else (an external cohort, another run) are evaluated but never stored in the bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sequoia_clinic.bundles.manifest import Bundle
from sequoia_clinic.bundles.reliability import attach_evaluation, read_reliability
from sequoia_clinic.bundles.store import load_bundle
from sequoia_clinic.errors import OptionError, TableError
from sequoia_clinic.evaluation.align import Measured, Unit, align
from sequoia_clinic.evaluation.figures import r_histogram, top_gene_scatter
from sequoia_clinic.evaluation.genes import GeneEvaluation, evaluate_genes
from sequoia_clinic.evaluation.io import PredictionFile, read_predictions
from sequoia_clinic.evaluation.rules import Rule
from sequoia_clinic.fileio import atomic_dir, check_output_dir, csv_safe_frame
from sequoia_clinic.settings import Settings
from sequoia_clinic.signatures.mapping import load_mapper
from sequoia_clinic.training.expression import Transform, read_expression

__all__ = [
    "EvaluateOutcome",
    "EvaluateRequest",
    "ReliableGenes",
    "Rule",
    "Transform",
    "Unit",
    "evaluate_predictions",
    "reliable_genes",
]

UNTRAINED_FILE = "baseline_untrained.parquet"
TRAIN_MEAN_FILE = "baseline_train_mean.parquet"


@dataclass(frozen=True)
class EvaluateRequest:
    predictions: Path
    expression: Path
    out: Path
    bundle: str | Path | None = None
    transform: Transform | None = None  # None: the bundle's training transform (required without a bundle)
    unit: Unit = Unit.PATIENT
    rule: Rule = Rule.STRICT  # the headline rule of the summary and figures (both are always computed)
    baseline: Path | None = None  # untrained-model predictions; None: UNTRAINED_FILE beside the predictions
    mean_baseline: Path | None = None  # training-mean predictions; None: TRAIN_MEAN_FILE beside them


@dataclass(frozen=True, eq=False)
class EvaluateOutcome:
    evaluation: GeneEvaluation
    out: Path
    files: tuple[Path, ...]
    stored_in: Path | None  # the bundle folder the evaluation was stored in
    not_stored_because: str | None
    summary: dict[str, Any]


def _transform(request: EvaluateRequest, bundle: Bundle | None) -> Transform:
    if request.transform is not None:
        return request.transform
    training = (bundle.provenance.get("training") or {}) if bundle is not None else {}
    recorded = (training.get("expression") or {}).get("transform")
    if recorded is None:
        raise OptionError(
            "the expression transform is unknown",
            fix="Pass --expression-transform log2p1 or none (as the model was trained).",
            option="transform",
        )
    return Transform(recorded)


def _baseline(given: Path | None, predictions: Path, default_name: str, what: str) -> PredictionFile | None:
    if given is not None:
        return read_predictions(given, what)
    beside = Path(predictions).parent / default_name
    return read_predictions(beside, what) if beside.is_file() else None


def _storage(bundle: Bundle | None, predictions: PredictionFile) -> str | None:
    """None when the evaluation may be stored in ``bundle``; else why not."""
    if bundle is None:
        return "no --bundle given"
    training_id = (bundle.provenance.get("training") or {}).get("id")
    if training_id is None:
        return f"bundle '{bundle.name}' was not made by `train`"
    if predictions.training_id != training_id:
        return "the predictions are not this bundle's out-of-fold predictions (training ids differ)"
    return None


def evaluate_predictions(request: EvaluateRequest, settings: Settings) -> EvaluateOutcome:
    """The ``evaluate`` flow (module docstring)."""
    check_output_dir(Path(request.out))
    bundle = load_bundle(request.bundle, settings) if request.bundle is not None else None
    transform = _transform(request, bundle)
    predictions = read_predictions(request.predictions)
    untrained = _baseline(request.baseline, request.predictions, UNTRAINED_FILE, "untrained baseline")
    train_mean = _baseline(request.mean_baseline, request.predictions, TRAIN_MEAN_FILE, "train-mean baseline")
    if bundle is not None:
        foreign = [g for g in predictions.predictions.genes if g not in set(bundle.genes)]
        if foreign and len(foreign) == len(predictions.predictions.genes):
            raise TableError(
                f"none of the predicted genes is a gene of bundle '{bundle.name}'",
                request.predictions,
                fix="Evaluate predictions made with that bundle, or leave out --bundle.",
            )
    # only the measured columns of the predicted genes are parsed (a wide table's other genes never are)
    table = read_expression(request.expression, transform, load_mapper(), predictions.predictions.genes)
    measured = Measured(table.patients, table.slide_ids, table.genes, table.values)
    aligned = align(
        predictions.predictions,
        measured,
        request.unit,
        None if untrained is None else untrained.predictions,
        None if train_mean is None else train_mean.predictions,
    )
    evaluation = evaluate_genes(aligned, request.rule)
    reason = _storage(bundle, predictions)
    summary = {
        **evaluation.summary.to_dict(),
        "inputs": {
            "predictions": Path(request.predictions).name,
            "expression": Path(request.expression).name,
            "transform": transform.value,
            "bundle": None if bundle is None else bundle.name,
            "ignored_prediction_columns": list(predictions.ignored_columns),
            "measured_genes_renamed": len(table.handling.renamed),
            "measured_genes_merged": len(table.handling.merged),
        },
        "stored_in_bundle": reason is None,
        "not_stored_because": reason,
    }
    out = Path(request.out)
    names = ("genes.csv", "genes.parquet", "summary.json", "r_histogram.png", "top_genes.png")
    with atomic_dir(out) as tmp:
        csv_safe_frame(evaluation.table).to_csv(tmp / "genes.csv", index=False, float_format="%.6g")
        evaluation.table.to_parquet(tmp / "genes.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        baselines = [
            (label, evaluation.table[column].to_numpy(dtype=float))
            for label, column, present in (
                ("untrained baseline", "r_untrained", untrained is not None),
                ("training-mean baseline", "r_train_mean", train_mean is not None),
            )
            if present
        ]
        r = evaluation.table["r"].to_numpy(dtype=float)
        (tmp / "r_histogram.png").write_bytes(
            r_histogram(r, baselines, request.unit.value, int(evaluation.summary.passing["strict"] or 0))
        )
        (tmp / "top_genes.png").write_bytes(top_gene_scatter(aligned, r))
    stored = None
    if reason is None and bundle is not None:
        protocol = evaluation.summary.protocol
        attach_evaluation(
            bundle.path,
            evaluation.table,
            {
                "unit": protocol.unit,
                "n_units": protocol.n_units,
                "n_genes": protocol.n_genes,
                "genes_passing": evaluation.summary.passing,
                "training_id": predictions.training_id,
            },
        )
        stored = bundle.path
    return EvaluateOutcome(evaluation, out, tuple(out / n for n in names), stored, reason, summary)


@dataclass(frozen=True)
class ReliableGenes:
    """The genes a bundle's stored evaluation finds reliably predicted (for ``calibrate --reliable-genes-only``)."""

    genes: frozenset[str]
    source: str  # e.g. "strict rule in the out-of-fold evaluation of bundle 'x' over 300 patients"


def reliable_genes(bundle_name: str | Path, settings: Settings) -> ReliableGenes:
    """The reliably predicted genes of a bundle (its stored evaluation, sha256-checked)."""
    bundle = load_bundle(bundle_name, settings, generate=False)
    reliability = read_reliability(bundle)
    if reliability is None:
        raise OptionError(
            f"bundle '{bundle.name}' stores no evaluation",
            bundle.path,
            fix="Run `sequoia-clinic evaluate --bundle ...` on its out-of-fold predictions first.",
        )
    genes = frozenset(g for g, ok in reliability.reliable.items() if ok)
    source = (
        f"{reliability.rule} rule, cross-validated r >= 0.3 and BH q < 0.05, in the out-of-fold evaluation "
        f"of bundle '{bundle.name}' over {reliability.n_units} {reliability.unit}s"
    )
    return ReliableGenes(genes, source)
