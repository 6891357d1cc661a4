"""Training stage: SEQUOIA aggregators trained on a cohort's cluster features and measured expression.

- :mod:`.expression`: expression tables (reference ``rna_`` format or wide), symbols, transform, checks;
- :mod:`.folds`: patient-grouped K-fold with a validation split, or a splits file;
- :mod:`.data`: the in-memory training set and the recipe (reference defaults);
- :mod:`.model`: seeded models, fine-tuning initialisation, the fused ViS training pass;
- :mod:`.checkpoint`: resumable per-fold checkpoints (safetensors + JSON, sha256-checked);
- :mod:`.loop`: the per-fold loop, checkpoint selection, test predictions and baselines;
- :mod:`.outputs`: per-epoch log, training curves and out-of-fold tables.
"""

from sequoia_clinic.training.data import Recipe, Selection, TrainingData
from sequoia_clinic.training.expression import ExpressionTable, GeneHandling, Transform, read_expression
from sequoia_clinic.training.folds import Fold, check_folds, patient_kfold, read_splits
from sequoia_clinic.training.loop import FoldOutcome, ModelSpec, TrainingRun, train_folds

__all__ = [
    "ExpressionTable",
    "Fold",
    "FoldOutcome",
    "GeneHandling",
    "ModelSpec",
    "Recipe",
    "Selection",
    "TrainingData",
    "TrainingRun",
    "Transform",
    "check_folds",
    "patient_kfold",
    "read_expression",
    "read_splits",
    "train_folds",
]
