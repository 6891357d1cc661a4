"""Evaluation stage: per-gene statistics of predicted vs measured expression and the "well predicted" rules.

- :mod:`.stats`: Pearson r/p, RMSE, Steiger's test of dependent correlations, Benjamini–Hochberg (vectorised);
- :mod:`.align`: predictions, baselines and measured values on one unit (patient or slide);
- :mod:`.rules`: the reference ``sequoia`` rule and the ``strict`` rule;
- :mod:`.genes`: every statistic per gene plus a summary that records the protocol;
- :mod:`.io`: the prediction-table layout shared with ``train``;
- :mod:`.figures`: r histogram and top-gene scatters.
"""

from sequoia_clinic.evaluation.align import Aligned, Measured, Predictions, Unit, align
from sequoia_clinic.evaluation.genes import COLUMNS, EvaluationSummary, GeneEvaluation, evaluate_genes
from sequoia_clinic.evaluation.rules import Rule

__all__ = [
    "COLUMNS",
    "Aligned",
    "EvaluationSummary",
    "GeneEvaluation",
    "Measured",
    "Predictions",
    "Rule",
    "Unit",
    "align",
    "evaluate_genes",
]
