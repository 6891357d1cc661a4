"""Patient-grouped cross-validation folds: made (seeded K-fold with a validation split) or read from JSON.

:func:`patient_kfold` follows the reference's ``patient_kfold`` (sequoia-pub ``src/utils.py``): the sorted
unique patient ids are split with ``KFold(k, shuffle=True, random_state=seed)``; each fold's training
patients are split again with ``train_test_split(test_size=val_fraction, random_state=seed)`` into
training and validation. With seed 0 (the default) and the same patient set, the folds equal the
reference's. Splitting is by patient, so all slides of a patient sit on the same side.

A splits file (``--splits``) is JSON: ``{"fold_0": {"train": [ids], "val": [ids], "test": [ids]}, ...}``
(keys ``fold_<i>`` or ``<i>``). The published SEQUOIA splits (``patient_splits.zip``, pickles of pandas
1.x Series) convert once, in an environment with pandas < 2::

    import json, numpy as np
    d = np.load("TCGA-BRCA.npy", allow_pickle=True).item()   # trusted file: a pickle
    json.dump({f"fold_{i}": {s: [str(p) for p in d[k][s]] for s in ("train", "val", "test")}
               for i, k in enumerate(sorted(d))}, open("brca-splits.json", "w"))

:func:`check_folds` refuses overlapping test folds, a patient on two sides of one fold, and a fold without
test (or training, or validation) patients.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import KFold, train_test_split

from sequoia_clinic.errors import InputPathError, OptionError, TableError

_FOLD_KEY = re.compile(r"^(?:fold_?|split_?)?(\d+)$")


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def patient_kfold(
    patients: Iterable[str], k: int = 5, seed: int = 0, val_fraction: float = 0.1
) -> tuple[Fold, ...]:
    """K patient-grouped folds with a validation split inside each training part (see module docstring)."""
    unique = np.unique(np.asarray(sorted(set(patients)), dtype=object).astype(str))
    if k < 2:
        raise OptionError(f"folds must be at least 2, got {k}", option="folds")
    if len(unique) < 2 * k:
        raise TableError(
            f"{len(unique)} patients are too few for {k} folds",
            fix="Use fewer folds (--folds) or more patients.",
        )
    if not 0.0 < val_fraction < 1.0:
        raise OptionError(
            f"the validation fraction must lie in (0, 1), got {val_fraction}", option="val_fraction"
        )
    folds = []
    for i, (train_idx, test_idx) in enumerate(KFold(k, shuffle=True, random_state=seed).split(unique)):
        train, val = train_test_split(unique[train_idx], test_size=val_fraction, random_state=seed)
        folds.append(
            Fold(
                i,
                tuple(str(p) for p in train),
                tuple(str(p) for p in val),
                tuple(str(p) for p in unique[test_idx]),
            )
        )
    return tuple(folds)


def _fold_number(key: str, path: Path) -> int:
    match = _FOLD_KEY.match(str(key))
    if match is None:
        raise TableError(f"unknown fold key '{key}'", path, fix="Name folds fold_0, fold_1, ...")
    return int(match.group(1))


def read_splits(path: Path) -> tuple[Fold, ...]:
    """Folds from a JSON splits file (format in the module docstring); checked by :func:`check_folds`."""
    path = Path(path)
    if not path.is_file():
        raise InputPathError("splits file not found", path, fix="Check the --splits path.")
    try:
        data: Any = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise TableError(f"the splits file is not valid JSON ({exc})", path) from None
    if not isinstance(data, dict) or not data:
        raise TableError("the splits file must be a JSON object of folds", path)
    folds = []
    for key, parts in data.items():
        if not isinstance(parts, dict) or not all(
            isinstance(parts.get(s), list) for s in ("train", "val", "test")
        ):
            raise TableError(f"fold '{key}' needs train, val and test lists", path)
        folds.append(
            Fold(
                _fold_number(key, path),
                *(tuple(str(p).strip() for p in parts[s]) for s in ("train", "val", "test")),
            )
        )
    folds.sort(key=lambda f: f.index)
    if [f.index for f in folds] != list(range(len(folds))):
        raise TableError("fold numbers must be 0, 1, ... without gaps", path)
    return tuple(folds)


def restrict(folds: Sequence[Fold], patients: Iterable[str]) -> tuple[Fold, ...]:
    """The folds with only the given patients (a splits file may list patients this cohort lacks)."""
    keep = set(patients)
    return tuple(
        Fold(f.index, *(tuple(p for p in part if p in keep) for part in (f.train, f.val, f.test)))
        for f in folds
    )


def check_folds(folds: Sequence[Fold], source: Path | None = None) -> None:
    """Refuse overlapping test folds, a patient on two sides of a fold, and empty parts."""
    seen: dict[str, int] = {}
    for fold in folds:
        for part, name in ((fold.test, "test"), (fold.train, "training"), (fold.val, "validation")):
            if not part:
                raise TableError(
                    f"fold {fold.index} has no {name} patients (after matching the manifest)",
                    source,
                    fix="Check the splits against the manifest's patient ids, or use fewer folds.",
                )
        sides = [set(fold.train), set(fold.val), set(fold.test)]
        for a, b, what in (
            (0, 1, "training and validation"),
            (0, 2, "training and test"),
            (1, 2, "validation and test"),
        ):
            both = sorted(sides[a] & sides[b])
            if both:
                raise TableError(f"fold {fold.index}: patient {both[0]} is in both {what}", source)
        for patient in fold.test:
            if patient in seen:
                raise TableError(
                    f"patient {patient} is in the test sets of folds {seen[patient]} and {fold.index}", source
                )
            seen[patient] = fold.index


def splits_json(folds: Sequence[Fold]) -> dict[str, dict[str, list[str]]]:
    return {f"fold_{f.index}": f.to_dict() for f in folds}
