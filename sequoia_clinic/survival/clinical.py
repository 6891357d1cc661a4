"""Typed clinical covariates of a clinico-genomic risk model: declaration, encoding and one patient's values.

A covariate is declared as ``NAME[:KIND[:REFERENCE]]`` (``calibrate --covariates age,size_cm,grade,er``):

* **continuous** (age in years, size_cm, nodes): used as the number, standardised like the genes;
* **ordinal** (grade 1 < 2 < 3): the level's rank (1, 2, 3 ...), one predictor;
* **categorical** (er, her2, menopause): one 0/1 indicator per level other than the reference level.

The clinical variables that ``score`` can take from options (``--age``, ``--tumour-size``, ``--grade``, ``--er``,
``--her2``, ``--nodes``, ``--menopause``) are known by name (:data:`KNOWN`, with their table-name aliases
and level words, e.g. "poorly differentiated" = grade 3); any other column is continuous unless typed.

Missing values follow a stated :class:`MissingRule`: ``refuse`` (default: an error naming the column and
the count) or ``impute`` (the calibration cohort's median level or value, the modal category), recorded
per covariate in the model (``imputed``) and on the model card. Rows are never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sequoia_clinic.clinical_choices import MissingRule
from sequoia_clinic.errors import OptionError, TableError
from sequoia_clinic.survival.records import MalformedRecord, read_int, read_str, read_strs

if TYPE_CHECKING:  # the tables arrive as frames; applying a model to one patient needs no pandas
    import pandas as pd

MISSING_WORDS = frozenset({"", "na", "nan", "none", "null", "unknown", "unkown", "missing", "?", "nk"})


class CovariateKind(StrEnum):
    CONTINUOUS = "continuous"
    ORDINAL = "ordinal"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class KnownVariable:
    """A clinical variable ``score`` can take from an option: its kind, levels and accepted words."""

    name: str
    kind: CovariateKind
    option: str  # the score option giving it
    unit: str
    aliases: tuple[str, ...]  # other table column names
    levels: tuple[str, ...] = ()  # ordinal: lowest first; categorical: the reference level first
    words: tuple[tuple[str, str], ...] = ()  # accepted word (lower case) -> level
    minimum: float | None = None
    maximum: float | None = None
    whole: bool = False  # a count (nodes)


YES_NO = (
    ("positive", "positive"),
    ("pos", "positive"),
    ("+", "positive"),
    ("1", "positive"),
    ("negative", "negative"),
    ("neg", "negative"),
    ("-", "negative"),
    ("0", "negative"),
)
KNOWN: dict[str, KnownVariable] = {
    v.name: v
    for v in (
        KnownVariable(
            "age", CovariateKind.CONTINUOUS, "age", "years", ("age_years",), minimum=0, maximum=120
        ),
        KnownVariable(
            "size_cm",
            CovariateKind.CONTINUOUS,
            "tumour_size",
            "cm",
            ("size", "tumour_size", "tumor_size", "tumour_size_cm", "tumor_size_cm"),
            minimum=0,
            maximum=30,
        ),
        KnownVariable(
            "grade",
            CovariateKind.ORDINAL,
            "grade",
            "histological grade",
            ("histological_grade", "tumour_grade", "tumor_grade"),
            levels=("1", "2", "3"),
            words=(
                ("1", "1"),
                ("2", "2"),
                ("3", "3"),
                ("g1", "1"),
                ("g2", "2"),
                ("g3", "3"),
                ("well differentiated", "1"),
                ("intermediate", "2"),
                ("moderately differentiated", "2"),
                ("poorly differentiated", "3"),
            ),
        ),
        KnownVariable(
            "er",
            CovariateKind.CATEGORICAL,
            "er",
            "oestrogen-receptor status",
            ("er_status", "esr"),
            levels=("negative", "positive"),
            words=YES_NO,
        ),
        KnownVariable(
            "her2",
            CovariateKind.CATEGORICAL,
            "her2",
            "HER2 status",
            ("her2_status", "erbb2_status"),
            levels=("negative", "positive"),
            words=YES_NO,
        ),
        KnownVariable(
            "nodes",
            CovariateKind.CONTINUOUS,
            "nodes",
            "positive lymph nodes",
            ("positive_nodes", "n_nodes", "lymph_nodes"),
            minimum=0,
            maximum=100,
            whole=True,
        ),
        KnownVariable(
            "menopause",
            CovariateKind.CATEGORICAL,
            "menopause",
            "menopausal status",
            ("menopausal_status",),
            levels=("pre", "post"),
            words=(("pre", "pre"), ("premenopausal", "pre"), ("post", "post"), ("postmenopausal", "post")),
        ),
    )
}
ALIASES = {alias: v.name for v in KNOWN.values() for alias in (v.name, *v.aliases)}


@dataclass(frozen=True)
class CovariateSpec:
    """One declared covariate: the table column, its kind, levels and how missing values were handled."""

    name: str  # canonical name (a KNOWN name, or the column name)
    column: str  # the table column it was read from
    kind: CovariateKind
    levels: tuple[str, ...] = ()  # ordinal: lowest first; categorical: reference first
    missing_rule: MissingRule = MissingRule.REFUSE
    imputed: int = 0  # calibration rows whose missing value was imputed
    impute_value: str | None = None  # the level or number used (text)

    @property
    def reference(self) -> str | None:
        return self.levels[0] if self.kind is CovariateKind.CATEGORICAL and self.levels else None

    @property
    def predictors(self) -> tuple[str, ...]:
        """Model predictor names: ``name``, or ``name[level]`` per non-reference level (categorical)."""
        if self.kind is CovariateKind.CATEGORICAL:
            return tuple(f"{self.name}[{level}]" for level in self.levels[1:])
        return (self.name,)

    def describe(self) -> str:
        if self.kind is CovariateKind.CATEGORICAL:
            return f"{self.name} (categorical, reference {self.reference}; levels {', '.join(self.levels)})"
        if self.kind is CovariateKind.ORDINAL:
            return f"{self.name} (ordinal, {' < '.join(self.levels)}; scored 1..{len(self.levels)})"
        return f"{self.name} (continuous)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "column": self.column,
            "kind": self.kind.value,
            "levels": list(self.levels),
            "missing_rule": self.missing_rule.value,
            "imputed": self.imputed,
            "impute_value": self.impute_value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> CovariateSpec:
        kind, rule = read_str(data, "kind", where), read_str(data, "missing_rule", where)
        if kind not in {k.value for k in CovariateKind}:
            raise MalformedRecord(f"{where}.kind", "must be continuous, ordinal or categorical")
        if rule not in {r.value for r in MissingRule}:
            raise MalformedRecord(f"{where}.missing_rule", "must be refuse or impute")
        value = data.get("impute_value")
        if value is not None and not isinstance(value, str):
            raise MalformedRecord(f"{where}.impute_value", "must be a string or null")
        return cls(
            name=read_str(data, "name", where),
            column=read_str(data, "column", where),
            kind=CovariateKind(kind),
            levels=read_strs(data, "levels", where),
            missing_rule=MissingRule(rule),
            imputed=read_int(data, "imputed", where),
            impute_value=value,
        )


# ---- declaring covariates (calibrate) -------------------------------------------------------------------


def parse_covariates(text: str | None) -> tuple[tuple[str, CovariateKind | None, str | None], ...]:
    """``age,grade:ordinal,site:categorical:north`` -> (column, kind or None, reference or None) each."""
    if not text:
        return ()
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        pieces = part.split(":")
        if len(pieces) > 3 or not pieces[0]:
            raise OptionError(
                f"'{part}' is not NAME[:KIND[:REFERENCE]]",
                fix="E.g. age,grade:ordinal,er.",
                option="covariates",
            )
        kind = None
        if len(pieces) > 1:
            try:
                kind = CovariateKind(pieces[1])
            except ValueError:
                raise OptionError(
                    f"'{pieces[1]}' is not one of {', '.join(k.value for k in CovariateKind)}",
                    fix="E.g. grade:ordinal or site:categorical:north.",
                    option="covariates",
                ) from None
        reference = pieces[2] if len(pieces) == 3 else None
        if reference is not None and kind is not CovariateKind.CATEGORICAL:
            raise OptionError(
                f"'{part}': a reference level needs the categorical kind",
                fix="Write NAME:categorical:REFERENCE.",
                option="covariates",
            )
        out.append((pieces[0], kind, reference))
    names = [c for c, _, _ in out]
    if len(set(names)) != len(names):
        raise OptionError("a covariate is listed twice", fix="List each column once.", option="covariates")
    return tuple(out)


def _missing(series: pd.Series) -> np.ndarray:
    text = series.astype(str).str.strip().str.lower()
    return (series.isna() | text.isin(MISSING_WORDS)).to_numpy()


def _level_of(known: KnownVariable | None, raw: str) -> str:
    word = raw.strip().lower()
    if known is not None and known.words:
        return dict(known.words).get(word, word)
    try:  # "2.0" and "2" are the same level
        number = float(word)
        return f"{number:g}" if math.isfinite(number) else word
    except ValueError:
        return word


@dataclass(frozen=True)
class EncodedCovariates:
    """The covariates' predictor columns for a cohort, and the fitted specs (levels, imputations)."""

    specs: tuple[CovariateSpec, ...]
    names: tuple[str, ...]  # predictor names, in column order
    values: np.ndarray  # patients x predictors

    def missing_summary(self) -> str:
        imputed = [f"{s.name}: {s.imputed} imputed with {s.impute_value}" for s in self.specs if s.imputed]
        if imputed:
            return (
                "clinical values missing in the calibration cohort were imputed (median level/value, "
                "modal category of the cohort): " + "; ".join(imputed) + "; gene values: none missing"
            )
        return "none: rows with missing values are rejected at input"


def encode_covariates(
    frame: pd.DataFrame,
    declared: Sequence[tuple[str, CovariateKind | None, str | None]],
    rule: MissingRule,
    path: Path | None,
) -> EncodedCovariates:
    """Read each declared covariate column, apply the missing rule, and encode it as predictors."""
    from sequoia_clinic.survival.cohort import require_columns  # noqa: PLC0415 (same stage, no cycle)

    require_columns(frame, [c for c, _, _ in declared], path, what="covariate column")
    specs: list[CovariateSpec] = []
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for column, kind, reference in declared:
        name = ALIASES.get(column.lower(), column)
        known = KNOWN.get(name)
        kind = kind or (known.kind if known else CovariateKind.CONTINUOUS)
        spec, block = _encode_column(frame[column], name, column, kind, reference, known, rule, path)
        specs.append(spec)
        names.extend(spec.predictors)
        blocks.append(block)
    values = np.hstack(blocks) if blocks else np.zeros((len(frame), 0))
    return EncodedCovariates(tuple(specs), tuple(names), values)


def _refuse_missing(column: str, count: int, path: Path | None) -> TableError:
    return TableError(
        f"covariate '{column}' has {count} missing value(s)",
        path,
        "Fill them in, or pass --missing impute (median/mode of the cohort, recorded in the model).",
    )


def _encode_column(
    series: pd.Series,
    name: str,
    column: str,
    kind: CovariateKind,
    reference: str | None,
    known: KnownVariable | None,
    rule: MissingRule,
    path: Path | None,
) -> tuple[CovariateSpec, np.ndarray]:
    missing = _missing(series)
    if missing.any() and rule is MissingRule.REFUSE:
        raise _refuse_missing(column, int(missing.sum()), path)
    if kind is CovariateKind.CONTINUOUS:
        import pandas as pd

        numbers = pd.to_numeric(series.where(~missing), errors="coerce").to_numpy(dtype=float)
        bad = int((~np.isfinite(numbers) & ~missing).sum())
        if bad:
            raise TableError(
                f"covariate '{column}' is not numeric ({bad} non-numeric value(s))",
                path,
                f"Give numbers, or declare it {column}:categorical or {column}:ordinal.",
            )
        median = float(np.median(numbers[~missing])) if missing.any() else None
        if median is not None:
            numbers[missing] = median
        spec = CovariateSpec(
            name, column, kind, (), rule, int(missing.sum()), None if median is None else f"{median:g}"
        )
        return spec, numbers[:, None]
    labels = np.array([_level_of(known, str(v)) for v in series.astype(str)], dtype=object)
    present = sorted({str(v) for v in labels[~missing]})
    levels = _levels(present, kind, reference, known, column, path)
    unknown = sorted({str(v) for v in labels[~missing]} - set(levels))
    if unknown:
        raise TableError(
            f"covariate '{column}' has {len(unknown)} value(s) that are not levels of {name} "
            f"({', '.join(levels)})",
            path,
            "Recode the column, or declare its kind (NAME:categorical).",
        )
    fill: str | None = None
    if missing.any():
        observed = labels[~missing]
        if kind is CovariateKind.ORDINAL:
            ranks = np.array([levels.index(v) for v in observed])
            fill = levels[int(np.round(np.median(ranks)))]
        else:
            counts = {lv: int((observed == lv).sum()) for lv in levels}
            fill = max(levels, key=lambda lv: (counts[lv], -levels.index(lv)))
        labels[missing] = fill
    spec = CovariateSpec(name, column, kind, levels, rule, int(missing.sum()), fill)
    return spec, level_matrix(spec, [str(v) for v in labels])


def _levels(
    present: list[str],
    kind: CovariateKind,
    reference: str | None,
    known: KnownVariable | None,
    column: str,
    path: Path | None,
) -> tuple[str, ...]:
    if known is not None and known.levels and known.kind is kind:
        levels = [lv for lv in known.levels if lv in present] or list(known.levels)
    elif kind is CovariateKind.ORDINAL:
        try:
            levels = sorted(present, key=float)
        except ValueError:
            raise TableError(
                f"ordinal covariate '{column}' has non-numeric levels ({', '.join(present[:5])})",
                path,
                "Code its levels as numbers (1, 2, 3 ...), lowest first.",
            ) from None
    else:
        levels = present
    if reference is not None:
        if reference.lower() not in levels:
            raise OptionError(
                f"reference level '{reference}' of '{column}' is not one of {', '.join(levels)}",
                fix="Name a level present in the column.",
                option="covariates",
            )
        levels = [reference.lower(), *[lv for lv in levels if lv != reference.lower()]]
    if len(levels) < 2:
        raise TableError(
            f"covariate '{column}' has a single level", path, "Drop it: it cannot change the risk."
        )
    return tuple(levels)


def level_matrix(spec: CovariateSpec, labels: Sequence[str]) -> np.ndarray:
    """Ordinal rank (1..k) or the 0/1 indicators of the non-reference levels, one row per label."""
    if spec.kind is CovariateKind.ORDINAL:
        return np.array([[spec.levels.index(v) + 1.0] for v in labels])
    return np.array([[1.0 if v == level else 0.0 for level in spec.levels[1:]] for v in labels])


# ---- one patient's clinical values (score) ----------------------------------------------------------------


@dataclass(frozen=True)
class ClinicalInputs:
    """A patient's clinical values as given to ``score`` (None: not given). Checked on construction."""

    age: float | None = None  # years
    tumour_size_cm: float | None = None
    grade: int | None = None  # 1, 2 or 3
    er: str | None = None  # positive / negative
    her2: str | None = None
    nodes: int | None = None  # positive lymph nodes
    menopause: str | None = None  # pre / post
    extra: tuple[tuple[str, float], ...] = ()  # other model covariates by name (patient JSON)

    def __post_init__(self) -> None:
        _check_number("age", self.age, KNOWN["age"])
        _check_number("tumour_size", self.tumour_size_cm, KNOWN["size_cm"])
        _check_number("nodes", self.nodes, KNOWN["nodes"])
        if self.grade is not None and self.grade not in (1, 2, 3):
            raise OptionError(
                f"{self.grade} is not 1, 2 or 3", fix="Give the histological grade.", option="grade"
            )
        for option, value, known in (
            ("er", self.er, KNOWN["er"]),
            ("her2", self.her2, KNOWN["her2"]),
            ("menopause", self.menopause, KNOWN["menopause"]),
        ):
            if value is not None and value not in known.levels:
                raise OptionError(
                    f"'{value}' is not one of {', '.join(known.levels)}",
                    fix="Use one of them.",
                    option=option,
                )

    def value_of(self, name: str) -> str | float | None:
        """The value of a canonical covariate name (level text for ordinal/categorical), or None."""
        values: dict[str, str | float | None] = {
            "age": self.age,
            "size_cm": self.tumour_size_cm,
            "grade": None if self.grade is None else str(self.grade),
            "er": self.er,
            "her2": self.her2,
            "nodes": None if self.nodes is None else float(self.nodes),
            "menopause": self.menopause,
            **dict(self.extra),
        }
        return values.get(name)

    def given(self) -> tuple[tuple[str, str], ...]:
        """(label, value text) of every value given, for the report."""
        rows = [
            ("Age", None if self.age is None else f"{self.age:g} years"),
            ("Tumour size", None if self.tumour_size_cm is None else f"{self.tumour_size_cm:g} cm"),
            ("Grade", None if self.grade is None else str(self.grade)),
            ("ER", self.er),
            ("HER2", self.her2),
            ("Positive nodes", None if self.nodes is None else str(self.nodes)),
            ("Menopausal status", self.menopause),
            *((name, f"{value:g}") for name, value in self.extra),
        ]
        return tuple((label, value) for label, value in rows if value is not None)

    @property
    def empty(self) -> bool:
        return not self.given()


def _check_number(option: str, value: float | None, known: KnownVariable) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OptionError(f"'{value}' is not a number", fix=f"Give {known.unit} as a number.", option=option)
    if known.whole and float(value) != int(value):
        raise OptionError(
            f"{value} is not a whole number", fix=f"Give the count of {known.unit}.", option=option
        )
    low, high = known.minimum, known.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        raise OptionError(
            f"{value:g} is outside {low:g}-{high:g} {known.unit}", fix=f"Give {known.unit}.", option=option
        )


class MissingCovariate(OptionError):
    """The risk model needs a clinical value that was not given."""


def patient_predictors(specs: Sequence[CovariateSpec], inputs: ClinicalInputs) -> dict[str, float]:
    """The model's covariate predictors for one patient; refuses (naming the option) a value not given."""
    out: dict[str, float] = {}
    for spec in specs:
        value = inputs.value_of(spec.name)
        option = KNOWN[spec.name].option if spec.name in KNOWN else "clinical"
        if value is None:
            raise MissingCovariate(
                f"the risk model needs {spec.describe()}, which was not given",
                fix="Give it (or a patient JSON with it), or use a genes-only risk model.",
                option=option,
            )
        if spec.kind is CovariateKind.CONTINUOUS:
            out[spec.name] = float(value)
            continue
        level = _level_of(KNOWN.get(spec.name), str(value))
        if level not in spec.levels:
            raise OptionError(
                f"'{value}' is not a level the model knows ({', '.join(spec.levels)})",
                fix="Use one of them.",
                option=option,
            )
        row = level_matrix(spec, [level])[0]
        out.update(zip(spec.predictors, map(float, row), strict=True))
    return out


PATIENT_KEYS = ("age", "tumour_size", "grade", "er", "her2", "nodes", "menopause")


def clinical_from_json(data: Any, path: Path) -> ClinicalInputs:
    """A patient JSON: ``{"age": 52, "tumour_size": 2.1, "grade": 2, "er": "positive", ...}``; other numeric
    keys are extra covariates by their model name."""
    from sequoia_clinic.errors import InputPathError

    if not isinstance(data, dict):
        raise InputPathError(
            "the patient JSON must be an object", path, 'E.g. {"age": 52, "er": "positive"}.'
        )
    known = {k: data[k] for k in PATIENT_KEYS if k in data and data[k] is not None}
    extra = []
    for key, value in data.items():
        if key in PATIENT_KEYS or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputPathError(f"'{key}' must be a number", path, "Give extra covariates as numbers.")
        extra.append((str(key), float(value)))
    grade = known.get("grade")
    if grade is not None and (isinstance(grade, bool) or not isinstance(grade, int)):
        raise OptionError(f"'{grade}' is not 1, 2 or 3", fix="Give the histological grade.", option="grade")
    return ClinicalInputs(
        age=known.get("age"),
        tumour_size_cm=known.get("tumour_size"),
        grade=grade,
        er=known.get("er"),
        her2=known.get("her2"),
        nodes=known.get("nodes"),
        menopause=known.get("menopause"),
        extra=tuple(extra),
    )


def encode_with_specs(frame: pd.DataFrame, specs: Sequence[CovariateSpec], path: Path | None) -> np.ndarray:
    """A table's covariate predictors, encoded as a fitted model's specs say (missing values refused)."""
    from sequoia_clinic.survival.cohort import require_columns  # noqa: PLC0415 (same stage, no cycle)

    require_columns(frame, [s.column for s in specs], path, what="covariate column")
    blocks = []
    for spec in specs:
        series = frame[spec.column]
        missing = _missing(series)
        if missing.any():
            raise _refuse_missing(spec.column, int(missing.sum()), path)
        if spec.kind is CovariateKind.CONTINUOUS:
            import pandas as pd

            numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
            if not np.isfinite(numbers).all():
                raise TableError(f"covariate '{spec.column}' is not numeric", path, "Give numbers.")
            blocks.append(numbers[:, None])
            continue
        labels = [_level_of(KNOWN.get(spec.name), str(v)) for v in series.astype(str)]
        unknown = sorted(set(labels) - set(spec.levels))
        if unknown:
            raise TableError(
                f"covariate '{spec.column}' has value(s) that are not levels of the model "
                f"({', '.join(spec.levels)})",
                path,
                "Recode the column.",
            )
        blocks.append(level_matrix(spec, labels))
    return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))


def clinical_inputs(
    path: Path | None,
    *,
    age: float | None = None,
    tumour_size_cm: float | None = None,
    grade: int | None = None,
    er: str | None = None,
    her2: str | None = None,
    nodes: int | None = None,
    menopause: str | None = None,
) -> ClinicalInputs:
    """The patient's clinical values: a patient JSON (when given) with the options overriding it."""
    import json

    from sequoia_clinic.errors import InputPathError

    base = ClinicalInputs()
    if path is not None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputPathError(
                f"not a JSON file ({type(exc).__name__})", path, "Pass a JSON object."
            ) from None
        base = clinical_from_json(data, Path(path))
    return ClinicalInputs(
        age=base.age if age is None else age,
        tumour_size_cm=base.tumour_size_cm if tumour_size_cm is None else tumour_size_cm,
        grade=base.grade if grade is None else grade,
        er=base.er if er is None else er,
        her2=base.her2 if her2 is None else her2,
        nodes=base.nodes if nodes is None else nodes,
        menopause=base.menopause if menopause is None else menopause,
        extra=base.extra,
    )
