"""Per-gene evaluation of aligned predictions: statistics, both rules, per-fold r and a summary with its protocol.

The result is one row per gene (:data:`COLUMNS` names them, in order) plus an :class:`EvaluationSummary`
that records the protocol (unit, pooling, rules, baselines, n), so a table can always be read correctly.
Predictions of all folds are pooled (each unit was predicted by the one fold whose test set held it); the
per-fold r is reported beside the pooled r.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sequoia_clinic.errors import TableError
from sequoia_clinic.evaluation.align import Aligned
from sequoia_clinic.evaluation.rules import RULE_TEXT, Rule, nan_to, passes_sequoia, passes_strict
from sequoia_clinic.evaluation.stats import benjamini_hochberg, correlation, pearson, rmse, steiger

MIN_UNITS = 5  # Steiger's df is n - 3; fewer units give no usable test
TOP_GENES = 1000


@dataclass(frozen=True)
class Protocol:
    """How the numbers were made (written into summary.json and the bundle's evaluation entry)."""

    unit: str
    n_units: int
    n_patients: int
    n_slides: int
    n_genes: int
    n_folds: int | None
    pooling: str
    baseline: str
    headline_rule: str
    rules: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EvaluationSummary:
    protocol: Protocol
    passing: dict[str, int | None]  # genes passing each rule (None: the rule needs a missing baseline)
    median_r: float
    top_median_r: float  # median r of the TOP_GENES genes with the highest r
    median_r_untrained: float | None
    median_r_train_mean: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (undefined figures are null)."""
        return {
            "protocol": self.protocol.to_dict(),
            "genes_passing": dict(self.passing),
            "median_r": _finite_or_none(self.median_r),
            f"top_{TOP_GENES}_median_r": _finite_or_none(self.top_median_r),
            "median_r_untrained": _finite_or_none(self.median_r_untrained),
            "median_r_train_mean": _finite_or_none(self.median_r_train_mean),
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


@dataclass(frozen=True, eq=False)
class GeneEvaluation:
    table: pd.DataFrame  # one row per gene, columns as documented in COLUMNS (+ r_fold<k>)
    summary: EvaluationSummary


COLUMNS = (
    "gene",
    "n",
    "r",  # Pearson r(measured, predicted), pooled over folds
    "p",  # two-sided Pearson p
    "q",  # BH q of p over all genes (NaN p counted as 1)
    "rmse",
    "r_untrained",
    "rmse_untrained",
    "r_pred_untrained",  # r(predicted, untrained): the yz of Steiger's test
    "steiger_t",  # signed
    "steiger_p",  # signed one-tailed (H1: r > r_untrained)
    "steiger_p_reference",  # the reference's one-tailed p on |t|
    "steiger_q_reference",  # BH q of steiger_p_reference over all genes (NaN as 1), as the reference
    "r_train_mean",
    "rmse_train_mean",
    "passes_sequoia",
    "passes_strict",
)


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def _per_fold_r(aligned: Aligned) -> dict[str, np.ndarray]:
    if aligned.folds is None:
        return {}
    out = {}
    for fold in sorted(set(aligned.folds.tolist())):
        rows = aligned.folds == fold
        if rows.sum() >= 3:
            out[f"r_fold{fold}"] = correlation(aligned.measured[rows], aligned.predicted[rows])
        else:
            out[f"r_fold{fold}"] = np.full(len(aligned.genes), np.nan)
    return out


def evaluate_genes(aligned: Aligned, headline: Rule = Rule.STRICT) -> GeneEvaluation:
    """Every statistic and both rules for every gene of ``aligned``."""
    n, g = aligned.measured.shape
    if n < MIN_UNITS:
        raise TableError(
            f"only {n} {aligned.unit.value}(s) have both predictions and measured expression; "
            f"at least {MIN_UNITS} are needed",
            fix="Check that the ids match between the tables.",
        )
    for name, values in (("predictions", aligned.predicted), ("measured expression", aligned.measured)):
        if not np.isfinite(values).all():
            raise TableError(f"the {name} hold NaN or infinite values", fix="Remove or fill them.")
    r, p = pearson(aligned.measured, aligned.predicted)
    q = benjamini_hochberg(nan_to(p, 1.0))
    columns: dict[str, Any] = {
        "gene": list(aligned.genes),
        "n": np.full(g, n, dtype=np.int64),
        "r": r,
        "p": p,
        "q": q,
        "rmse": rmse(aligned.predicted, aligned.measured),
    }
    nan = np.full(g, np.nan)
    if aligned.untrained is not None:
        xz = correlation(aligned.measured, aligned.untrained)
        yz = correlation(aligned.predicted, aligned.untrained)
        st = steiger(nan_to(r, 0.0), nan_to(xz, 0.0), nan_to(yz, 0.0), n)
        steiger_q = benjamini_hochberg(nan_to(st.p_abs, 1.0))
        columns |= {
            "r_untrained": xz,
            "rmse_untrained": rmse(aligned.untrained, aligned.measured),
            "r_pred_untrained": yz,
            "steiger_t": st.t,
            "steiger_p": st.p_signed,
            "steiger_p_reference": st.p_abs,
            "steiger_q_reference": steiger_q,
        }
        sequoia = passes_sequoia(r, p, columns["rmse"], columns["rmse_untrained"], xz, st.p_abs, steiger_q)
    else:
        columns |= {
            name: nan
            for name in (
                "r_untrained",
                "rmse_untrained",
                "r_pred_untrained",
                "steiger_t",
                "steiger_p",
                "steiger_p_reference",
                "steiger_q_reference",
            )
        }
        sequoia = None
    if aligned.train_mean is not None:
        columns["r_train_mean"] = correlation(aligned.measured, aligned.train_mean)
        columns["rmse_train_mean"] = rmse(aligned.train_mean, aligned.measured)
    else:
        columns["r_train_mean"] = nan
        columns["rmse_train_mean"] = nan
    strict = passes_strict(r, q)
    # Not evaluated without the untrained baseline: missing (<NA>), never a silent False.
    columns["passes_sequoia"] = pd.array(sequoia if sequoia is not None else [pd.NA] * g, dtype="boolean")
    columns["passes_strict"] = strict
    table = pd.DataFrame({name: columns[name] for name in COLUMNS})
    for name, values in _per_fold_r(aligned).items():
        table[name] = values

    top = np.sort(nan_to(r, -np.inf))[::-1][:TOP_GENES]
    summary = EvaluationSummary(
        protocol=Protocol(
            unit=aligned.unit.value,
            n_units=n,
            n_patients=aligned.n_patients,
            n_slides=aligned.n_slides,
            n_genes=g,
            n_folds=None if aligned.folds is None else len(set(aligned.folds.tolist())),
            pooling="test predictions of all folds pooled (each unit predicted by the fold that did not train on it)"
            if aligned.folds is not None
            else "as given (no fold column)",
            baseline=(
                "untrained model of the same architecture, seeded per fold"
                if aligned.untrained is not None
                else "none given: the sequoia rule is not evaluated"
            )
            + ("; training-set mean per fold" if aligned.train_mean is not None else ""),
            headline_rule=headline.value,
            rules={rule.value: RULE_TEXT[rule] for rule in Rule},
        ),
        passing={
            Rule.SEQUOIA.value: None if sequoia is None else int(sequoia.sum()),
            Rule.STRICT.value: int(strict.sum()),
        },
        median_r=_median(r),
        top_median_r=_median(top[np.isfinite(top)]),
        median_r_untrained=None if aligned.untrained is None else _median(columns["r_untrained"]),
        median_r_train_mean=None if aligned.train_mean is None else _median(columns["r_train_mean"]),
    )
    return GeneEvaluation(table=table, summary=summary)
