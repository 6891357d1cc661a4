"""The typed, frozen records of the survival stage and their JSON form (risk-model file, ``stratify.json``).

Each record has ``to_dict`` (plain JSON types, keys as in the file format ``sequoia-clinic/risk-model`` v1)
and ``from_dict``, which checks every type and number and raises :class:`MalformedRecord` (a
:class:`~sequoia_clinic.errors.RiskModelError`) naming the offending key, e.g. ``performance.metrics.uno_c.
mean``; :meth:`RiskModel.from_dict <sequoia_clinic.survival.model.RiskModel.from_dict>` adds the file name.
Numbers that are not estimable (an infinite hazard ratio, a metric undefined on a sample) are ``None`` in
memory and ``null`` in the file, so a record written and read back compares equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np

from sequoia_clinic.errors import OptionError, RiskModelError
from sequoia_clinic.settings import RiskSettings
from sequoia_clinic.survival.cutoffs import QUANTILE_METHODS, SCALES

T = TypeVar("T")


class MalformedRecord(RiskModelError):
    """A section of a risk-model file has a missing key or a value of the wrong type."""

    def __init__(self, where: str, expected: str) -> None:
        super().__init__(f"malformed risk model: '{where}' {expected}", fix="Recalibrate.")
        self.where = where
        self.expected = expected


# ---- readers: one checked value from a JSON object ----------------------------------------------------


def _at(where: str, key: str) -> str:
    """The dotted path of ``key`` inside ``where`` ("" is the top of the file)."""
    return f"{where}.{key}" if where else key


def _value(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise MalformedRecord(_at(where, key), "is missing")
    return data[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def section(data: Any, where: str) -> Mapping[str, Any]:
    """``data`` itself, checked to be a JSON object."""
    if not isinstance(data, Mapping):
        raise MalformedRecord(where, "must be an object")
    return data


def read_section(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    return section(_value(data, key, where), _at(where, key))


def _number(value: Any, where: str) -> float:
    if not _is_number(value):
        raise MalformedRecord(where, "must be a finite number")
    return float(value)


def _optional_number(value: Any, where: str) -> float | None:
    return None if value is None else _number(value, where)


def read_float(data: Mapping[str, Any], key: str, where: str) -> float:
    return _number(_value(data, key, where), _at(where, key))


def read_optional_float(data: Mapping[str, Any], key: str, where: str) -> float | None:
    return _optional_number(_value(data, key, where), _at(where, key))


def _whole(value: Any, where: str) -> int:
    if not _is_number(value) or float(value) != int(value):
        raise MalformedRecord(where, "must be a whole number")
    return int(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedRecord(where, "must be a string")
    return value


def read_int(data: Mapping[str, Any], key: str, where: str) -> int:
    return _whole(_value(data, key, where), _at(where, key))


def read_str(data: Mapping[str, Any], key: str, where: str) -> str:
    return _text(_value(data, key, where), _at(where, key))


def read_optional_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    """A string, or None where the key is absent or null (an optional note)."""
    return None if key not in data or data[key] is None else read_str(data, key, where)


def read_nullable(
    data: Mapping[str, Any], key: str, where: str, read: Callable[[Mapping[str, Any], str, str], T]
) -> T | None:
    """``read(data, key, where)``, or None where the key holds null (the key must be present)."""
    return None if _value(data, key, where) is None else read(data, key, where)


def read_bool(data: Mapping[str, Any], key: str, where: str) -> bool:
    value = _value(data, key, where)
    if not isinstance(value, bool):
        raise MalformedRecord(_at(where, key), "must be true or false")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise MalformedRecord(where, "must be a list")
    return list(value)


def read_list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    return _list(_value(data, key, where), _at(where, key))


def _numbers(value: Any, where: str) -> tuple[float, ...]:
    return tuple(_number(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _texts(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_text(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def read_floats(data: Mapping[str, Any], key: str, where: str) -> tuple[float, ...]:
    return _numbers(_value(data, key, where), _at(where, key))


def read_optional_floats(data: Mapping[str, Any], key: str, where: str) -> tuple[float | None, ...]:
    here = _at(where, key)
    return tuple(_optional_number(v, f"{here}[{i}]") for i, v in enumerate(read_list(data, key, where)))


def read_ints(data: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    here = _at(where, key)
    return tuple(_whole(v, f"{here}[{i}]") for i, v in enumerate(read_list(data, key, where)))


def read_strs(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    return _texts(_value(data, key, where), _at(where, key))


def read_pair(data: Mapping[str, Any], key: str, where: str) -> tuple[float | None, float | None]:
    values = read_optional_floats(data, key, where)
    if len(values) != 2:
        raise MalformedRecord(_at(where, key), "must hold two numbers (lower, upper)")
    return values[0], values[1]


def read_records(
    data: Mapping[str, Any], key: str, where: str, parse: Callable[[Any, str], T]
) -> tuple[T, ...]:
    """A list of sub-records, each parsed by ``parse(item, where)``."""
    here = _at(where, key)
    return tuple(parse(item, f"{here}[{i}]") for i, item in enumerate(read_list(data, key, where)))


def horizon_key(years: float) -> str:
    """The JSON key of a horizon in years: 5.0 -> "5", 2.5 -> "2.5"."""
    return f"{years:g}"


def parse_horizon_key(key: str, where: str) -> float:
    try:
        years = float(key)
    except ValueError:
        raise MalformedRecord(_at(where, key), "is not a horizon in years") from None
    if not math.isfinite(years) or years <= 0:
        raise MalformedRecord(_at(where, key), "is not a horizon in years")
    return years


def finite_or_none(value: float | np.floating | None) -> float | None:
    """``value`` as a float, or None where it is missing, NaN or infinite (a figure not estimable)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays converted, NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


# ---- fixed choices ----------------------------------------------------------------------------------------


class ExpressionSource(StrEnum):
    """Where a model's calibration expression came from; ``score`` warns unless it is ``predicted``."""

    MEASURED = "measured"  # an RNA assay (microarray, RNA-seq)
    PREDICTED = "predicted"  # predicted from slides by `sequoia-clinic predict`
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: str) -> ExpressionSource:
        """The source named ``value``; an :class:`OptionError` naming ``expression_source`` otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise OptionError(
                f"'{value}' is not one of {', '.join(s.value for s in cls)}",
                fix="Use predicted for tables made with `sequoia-clinic predict`.",
                option="expression_source",
            ) from None


class PredictorKind(StrEnum):
    GENE = "gene"
    COVARIATE = "covariate"


# ---- Kaplan-Meier and group comparisons (km.py computes them) ---------------------------------------------


@dataclass(frozen=True)
class KMPoint:
    """Kaplan-Meier survival with its 95% CI at one time (None beyond the last follow-up)."""

    time: float
    survival: float | None
    lower: float | None
    upper: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "survival": self.survival, "lower": self.lower, "upper": self.upper}

    @classmethod
    def from_dict(cls, data: Any, where: str = "km_point") -> KMPoint:
        data = section(data, where)
        return cls(
            time=read_float(data, "time", where),
            survival=read_optional_float(data, "survival", where),
            lower=read_optional_float(data, "lower", where),
            upper=read_optional_float(data, "upper", where),
        )


@dataclass(frozen=True)
class KMGroupCurve:
    """One group's KM step curve (times in years) with 95% CI, at-risk counts at ticks and horizon values."""

    label: str
    n: int
    events: int
    times: tuple[float, ...]
    survival: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    ticks: tuple[float, ...]
    at_risk: tuple[int, ...]
    cumulative_events: tuple[int, ...]
    at_horizons: tuple[KMPoint, ...]

    def at(self, years: float) -> KMPoint | None:
        return next((p for p in self.at_horizons if p.time == years), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "n": self.n,
            "events": self.events,
            "times": list(self.times),
            "survival": list(self.survival),
            "lower": list(self.lower),
            "upper": list(self.upper),
            "ticks": list(self.ticks),
            "at_risk": list(self.at_risk),
            "cumulative_events": list(self.cumulative_events),
            "at_horizons": [p.to_dict() for p in self.at_horizons],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "km_curve") -> KMGroupCurve:
        data = section(data, where)
        curve = cls(
            label=read_str(data, "label", where),
            n=read_int(data, "n", where),
            events=read_int(data, "events", where),
            times=read_floats(data, "times", where),
            survival=read_floats(data, "survival", where),
            lower=read_floats(data, "lower", where),
            upper=read_floats(data, "upper", where),
            ticks=read_floats(data, "ticks", where),
            at_risk=read_ints(data, "at_risk", where),
            cumulative_events=read_ints(data, "cumulative_events", where),
            at_horizons=read_records(data, "at_horizons", where, KMPoint.from_dict),
        )
        if not len(curve.times) == len(curve.survival) == len(curve.lower) == len(curve.upper):
            raise MalformedRecord(where, "has times, survival and CI of different lengths")
        if not len(curve.ticks) == len(curve.at_risk) == len(curve.cumulative_events):
            raise MalformedRecord(where, "has ticks and at-risk counts of different lengths")
        return curve


@dataclass(frozen=True)
class LogRankTest:
    """Multivariate (k-group) log-rank test."""

    test_statistic: float
    degrees_of_freedom: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_statistic": self.test_statistic,
            "degrees_of_freedom": self.degrees_of_freedom,
            "p_value": self.p_value,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "logrank") -> LogRankTest:
        data = section(data, where)
        return cls(
            test_statistic=read_float(data, "test_statistic", where),
            degrees_of_freedom=read_int(data, "degrees_of_freedom", where),
            p_value=read_float(data, "p_value", where),
        )


@dataclass(frozen=True)
class PairwiseLogRank:
    """Log-rank test of one pair of groups (p not adjusted for multiple comparisons)."""

    group_a: str
    group_b: str
    test_statistic: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_a": self.group_a,
            "group_b": self.group_b,
            "test_statistic": self.test_statistic,
            "p_value": self.p_value,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "pairwise_logrank") -> PairwiseLogRank:
        data = section(data, where)
        return cls(
            group_a=read_str(data, "group_a", where),
            group_b=read_str(data, "group_b", where),
            test_statistic=read_float(data, "test_statistic", where),
            p_value=read_float(data, "p_value", where),
        )


@dataclass(frozen=True)
class HazardRatio:
    """HR (Wald 95% CI) of ``group`` vs ``reference``; all None with a ``note`` when not estimable."""

    group: str
    reference: str
    hazard_ratio: float | None
    lower: float | None
    upper: float | None
    p_value: float | None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "group": self.group,
            "reference": self.reference,
            "hazard_ratio": self.hazard_ratio,
            "lower": self.lower,
            "upper": self.upper,
            "p_value": self.p_value,
        }
        if self.note is not None:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "hazard_ratio") -> HazardRatio:
        data = section(data, where)
        return cls(
            group=read_str(data, "group", where),
            reference=read_str(data, "reference", where),
            hazard_ratio=read_optional_float(data, "hazard_ratio", where),
            lower=read_optional_float(data, "lower", where),
            upper=read_optional_float(data, "upper", where),
            p_value=read_optional_float(data, "p_value", where),
            note=read_optional_str(data, "note", where),
        )


# ---- the audit sections of a risk model --------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureSummary:
    """The signature a model was fitted on, as recorded at calibration (genes in SEQUOIA symbols)."""

    name: str
    genes: tuple[str, ...]
    weights: tuple[float, ...] | None
    unmapped: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...]
    groups: tuple[str, ...] | None
    formula: str
    citation: str
    description: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "genes": list(self.genes),
            "weights": None if self.weights is None else list(self.weights),
            "unmapped": list(self.unmapped),
            "renamed": [list(pair) for pair in self.renamed],
            "groups": None if self.groups is None else list(self.groups),
            "formula": self.formula,
            "citation": self.citation,
            "description": self.description,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "signature") -> SignatureSummary:
        data = section(data, where)
        renamed = []
        for i, pair in enumerate(read_list(data, "renamed", where)):
            names = _texts(pair, f"{where}.renamed[{i}]")
            if len(names) != 2:
                raise MalformedRecord(f"{where}.renamed[{i}]", "must be a [published, SEQUOIA] pair")
            renamed.append((names[0], names[1]))
        return cls(
            name=read_str(data, "name", where),
            genes=read_strs(data, "genes", where),
            weights=read_nullable(data, "weights", where, read_floats),
            unmapped=read_strs(data, "unmapped", where),
            renamed=tuple(renamed),
            groups=read_nullable(data, "groups", where, read_strs),
            formula=read_str(data, "formula", where),
            citation=read_str(data, "citation", where),
            description=read_str(data, "description", where),
            source=read_str(data, "source", where),
        )


@dataclass(frozen=True)
class PenaltyChoice:
    """The Cox penalty: method, the chosen alpha and, when chosen by CV, the path and its CV likelihood."""

    method: str
    alpha: float
    l1_ratio: float
    chosen_by: str
    alpha_path: tuple[float, ...] | None
    cv_partial_loglik: tuple[float | None, ...] | None
    covariates_penalised: bool
    nonzero_coefficients: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "alpha": self.alpha,
            "l1_ratio": self.l1_ratio,
            "chosen_by": self.chosen_by,
            "alpha_path": None if self.alpha_path is None else list(self.alpha_path),
            "cv_partial_loglik": None if self.cv_partial_loglik is None else list(self.cv_partial_loglik),
            "covariates_penalised": self.covariates_penalised,
            "nonzero_coefficients": self.nonzero_coefficients,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "penalty") -> PenaltyChoice:
        data = section(data, where)
        return cls(
            method=read_str(data, "method", where),
            alpha=read_float(data, "alpha", where),
            l1_ratio=read_float(data, "l1_ratio", where),
            chosen_by=read_str(data, "chosen_by", where),
            alpha_path=read_nullable(data, "alpha_path", where, read_floats),
            cv_partial_loglik=read_nullable(data, "cv_partial_loglik", where, read_optional_floats),
            covariates_penalised=read_bool(data, "covariates_penalised", where),
            nonzero_coefficients=read_int(data, "nonzero_coefficients", where),
        )


@dataclass(frozen=True)
class GroupRule:
    """The frozen risk groups: how the cut-offs were chosen, the cut-offs on the lp scale and the names."""

    method: str  # "user" or a quantile split of survival/cutoffs.py (tertiles, median, quartiles)
    scale: str  # the scale of user_values (survival/cutoffs.py SCALES)
    user_values: tuple[float, ...]
    description: str
    training_counts: tuple[int, ...]  # calibration patients per group
    cutoffs: tuple[float, ...]  # lp scale; group k holds lp in [cutoffs[k-1], cutoffs[k])
    names: tuple[str, ...]  # lowest risk first

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scale": self.scale,
            "user_values": list(self.user_values),
            "description": self.description,
            "training_counts": list(self.training_counts),
            "cutoffs_lp": list(self.cutoffs),
            "names": list(self.names),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "groups") -> GroupRule:
        data = section(data, where)
        rule = cls(
            method=read_str(data, "method", where),
            scale=read_str(data, "scale", where),
            user_values=read_floats(data, "user_values", where),
            description=read_str(data, "description", where),
            training_counts=read_ints(data, "training_counts", where),
            cutoffs=read_floats(data, "cutoffs_lp", where),
            names=read_strs(data, "names", where),
        )
        methods = ("user", *QUANTILE_METHODS)
        if rule.method not in methods:
            raise MalformedRecord(f"{where}.method", f"must be one of {', '.join(methods)}")
        if rule.scale not in SCALES:
            raise MalformedRecord(f"{where}.scale", f"must be one of {', '.join(SCALES)}")
        if len(rule.names) != len(rule.cutoffs) + 1 or len(rule.training_counts) != len(rule.names):
            raise MalformedRecord(where, "must have one name and one count per group (cut-offs + 1)")
        if list(rule.cutoffs) != sorted(rule.cutoffs):
            raise MalformedRecord(f"{where}.cutoffs_lp", "must be increasing")
        return rule


@dataclass(frozen=True)
class HorizonCount:
    """Events observed up to a horizon (years)."""

    years: float
    events: int


@dataclass(frozen=True)
class TrainingSummary:
    """The calibration cohort: size, events, follow-up and its overall Kaplan-Meier survival."""

    n: int
    events: int
    event_fraction: float
    median_follow_up_years: float | None  # reverse Kaplan-Meier; None if not reached
    median_follow_up_method: str
    follow_up_range_years: tuple[float, float]
    events_by_horizon: tuple[HorizonCount, ...]
    km_survival: tuple[KMPoint, ...]
    source_time_unit: str
    missing_data: str
    cohort: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "events": self.events,
            "event_fraction": self.event_fraction,
            "median_follow_up_years": self.median_follow_up_years,
            "median_follow_up_method": self.median_follow_up_method,
            "follow_up_range_years": list(self.follow_up_range_years),
            "events_by_horizon": {horizon_key(h.years): h.events for h in self.events_by_horizon},
            "km_survival": [p.to_dict() for p in self.km_survival],
            "source_time_unit": self.source_time_unit,
            "missing_data": self.missing_data,
            "cohort": self.cohort,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "training") -> TrainingSummary:
        data = section(data, where)
        by_horizon = read_section(data, "events_by_horizon", where)
        here = f"{where}.events_by_horizon"
        span = read_floats(data, "follow_up_range_years", where)
        if len(span) != 2:
            raise MalformedRecord(f"{where}.follow_up_range_years", "must hold two numbers (min, max)")
        return cls(
            n=read_int(data, "n", where),
            events=read_int(data, "events", where),
            event_fraction=read_float(data, "event_fraction", where),
            median_follow_up_years=read_optional_float(data, "median_follow_up_years", where),
            median_follow_up_method=read_str(data, "median_follow_up_method", where),
            follow_up_range_years=(span[0], span[1]),
            events_by_horizon=tuple(
                HorizonCount(parse_horizon_key(k, here), read_int(by_horizon, k, here)) for k in by_horizon
            ),
            km_survival=read_records(data, "km_survival", where, KMPoint.from_dict),
            source_time_unit=read_str(data, "source_time_unit", where),
            missing_data=read_str(data, "missing_data", where),
            cohort=read_str(data, "cohort", where),
        )


@dataclass(frozen=True)
class MetricSummary:
    """One cross-validated figure: mean, spread over CV repeats, per-repeat values and a bootstrap 95% CI.

    Any value may be None where the metric is undefined (e.g. no event before a horizon in a sample).
    """

    mean: float | None
    sd_over_repeats: float | None
    min_over_repeats: float | None
    max_over_repeats: float | None
    per_repeat: tuple[float | None, ...]
    ci_lower: float | None
    ci_upper: float | None
    bootstrap_valid: int  # bootstrap resamples where the metric was defined

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "sd_over_repeats": self.sd_over_repeats,
            "min_over_repeats": self.min_over_repeats,
            "max_over_repeats": self.max_over_repeats,
            "per_repeat": list(self.per_repeat),
            "ci_lower": self.ci_lower,
            "ci_upper": self.ci_upper,
            "bootstrap_valid": self.bootstrap_valid,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "metric") -> MetricSummary:
        data = section(data, where)
        return cls(
            mean=read_optional_float(data, "mean", where),
            sd_over_repeats=read_optional_float(data, "sd_over_repeats", where),
            min_over_repeats=read_optional_float(data, "min_over_repeats", where),
            max_over_repeats=read_optional_float(data, "max_over_repeats", where),
            per_repeat=read_optional_floats(data, "per_repeat", where),
            ci_lower=read_optional_float(data, "ci_lower", where),
            ci_upper=read_optional_float(data, "ci_upper", where),
            bootstrap_valid=read_int(data, "bootstrap_valid", where),
        )


@dataclass(frozen=True)
class CVDesign:
    """How the cross-validated figures were computed (times in years)."""

    outer_folds: int
    repeats: int
    fold_seeds: tuple[int, ...]
    stratified_by_event: bool
    penalty_rechosen_in_each_training_fold: bool
    inner_folds: int
    n_bootstrap: int
    bootstrap: str
    auc_horizons_years: tuple[float, ...]
    calibration_horizons_years: tuple[float, ...]
    ibs_times_years: tuple[float, ...]
    uno_tau_years: float
    ipcw_censoring: str
    calibration_slope: str
    calibration_in_the_large: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "performance.design") -> CVDesign:
        data = section(data, where)
        return cls(
            outer_folds=read_int(data, "outer_folds", where),
            repeats=read_int(data, "repeats", where),
            fold_seeds=read_ints(data, "fold_seeds", where),
            stratified_by_event=read_bool(data, "stratified_by_event", where),
            penalty_rechosen_in_each_training_fold=read_bool(
                data, "penalty_rechosen_in_each_training_fold", where
            ),
            inner_folds=read_int(data, "inner_folds", where),
            n_bootstrap=read_int(data, "n_bootstrap", where),
            bootstrap=read_str(data, "bootstrap", where),
            auc_horizons_years=read_floats(data, "auc_horizons_years", where),
            calibration_horizons_years=read_floats(data, "calibration_horizons_years", where),
            ibs_times_years=read_floats(data, "ibs_times_years", where),
            uno_tau_years=read_float(data, "uno_tau_years", where),
            ipcw_censoring=read_str(data, "ipcw_censoring", where),
            calibration_slope=read_str(data, "calibration_slope", where),
            calibration_in_the_large=read_str(data, "calibration_in_the_large", where),
        )


@dataclass(frozen=True)
class Performance:
    """Cross-validated performance: each metric by name (``harrell_c``, ``auc_5y`` ...) and the CV design."""

    metrics: tuple[tuple[str, MetricSummary], ...]  # (name, summary) in the order computed
    design: CVDesign

    def metric(self, name: str) -> MetricSummary | None:
        return next((m for key, m in self.metrics if key == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": {k: m.to_dict() for k, m in self.metrics}, "design": self.design.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "performance") -> Performance:
        data = section(data, where)
        metrics = read_section(data, "metrics", where)
        return cls(
            metrics=tuple(
                (str(k), MetricSummary.from_dict(v, f"{where}.metrics.{k}")) for k, v in metrics.items()
            ),
            design=CVDesign.from_dict(_value(data, "design", where), f"{where}.design"),
        )


@dataclass(frozen=True)
class CrossValidatedKM:
    """KM curves of the cross-validated risk groups (each patient grouped by a model fitted without them)."""

    description: str
    display_limit_years: float
    groups: tuple[KMGroupCurve, ...]
    logrank: LogRankTest | None  # None with a single group
    pairwise_logrank: tuple[PairwiseLogRank, ...]
    hazard_ratios_vs_lowest: tuple[HazardRatio, ...]
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "display_limit_years": self.display_limit_years,
            "groups": [g.to_dict() for g in self.groups],
            "logrank": None if self.logrank is None else self.logrank.to_dict(),
            "pairwise_logrank": [p.to_dict() for p in self.pairwise_logrank],
            "hazard_ratios_vs_lowest": [h.to_dict() for h in self.hazard_ratios_vs_lowest],
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "cross_validated_km") -> CrossValidatedKM:
        data = section(data, where)
        logrank = _value(data, "logrank", where)
        return cls(
            description=read_str(data, "description", where),
            display_limit_years=read_float(data, "display_limit_years", where),
            groups=read_records(data, "groups", where, KMGroupCurve.from_dict),
            logrank=None if logrank is None else LogRankTest.from_dict(logrank, f"{where}.logrank"),
            pairwise_logrank=read_records(data, "pairwise_logrank", where, PairwiseLogRank.from_dict),
            hazard_ratios_vs_lowest=read_records(
                data, "hazard_ratios_vs_lowest", where, HazardRatio.from_dict
            ),
            note=read_str(data, "note", where),
        )


@dataclass(frozen=True)
class PHCheck:
    """Proportional-hazards check of the apparent linear predictor (None where the fit failed)."""

    method: str
    test_statistic: float | None
    p_value: float | None
    apparent_hr_per_unit_lp: float | None
    interpretation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "test_statistic": self.test_statistic,
            "p_value": self.p_value,
            "apparent_hr_per_unit_lp": self.apparent_hr_per_unit_lp,
            "interpretation": self.interpretation,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "ph_check") -> PHCheck:
        data = section(data, where)
        return cls(
            method=read_str(data, "method", where),
            test_statistic=read_optional_float(data, "test_statistic", where),
            p_value=read_optional_float(data, "p_value", where),
            apparent_hr_per_unit_lp=read_optional_float(data, "apparent_hr_per_unit_lp", where),
            interpretation=read_str(data, "interpretation", where),
        )


@dataclass(frozen=True)
class CalibrationBin:
    """Out-of-fold predicted vs Kaplan-Meier observed risk in one predicted-risk quantile bin."""

    bin: int
    n: int
    events_by_horizon: int
    predicted: float
    observed: float
    observed_lower: float
    observed_upper: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "bin": self.bin,
            "n": self.n,
            "events_by_horizon": self.events_by_horizon,
            "predicted": self.predicted,
            "observed": self.observed,
            "observed_lower": self.observed_lower,
            "observed_upper": self.observed_upper,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration_bin") -> CalibrationBin:
        data = section(data, where)
        return cls(
            bin=read_int(data, "bin", where),
            n=read_int(data, "n", where),
            events_by_horizon=read_int(data, "events_by_horizon", where),
            predicted=read_float(data, "predicted", where),
            observed=read_float(data, "observed", where),
            observed_lower=read_float(data, "observed_lower", where),
            observed_upper=read_float(data, "observed_upper", where),
        )


@dataclass(frozen=True)
class CalibrationCurve:
    """The calibration table at one horizon (years)."""

    years: float
    bins: tuple[CalibrationBin, ...]


def calibration_plot_to_dict(curves: Sequence[CalibrationCurve]) -> dict[str, Any]:
    return {horizon_key(c.years): [b.to_dict() for b in c.bins] for c in curves}


def calibration_plot_from_dict(data: Any, where: str = "calibration_plot") -> tuple[CalibrationCurve, ...]:
    data = section(data, where)
    return tuple(
        CalibrationCurve(parse_horizon_key(k, where), read_records(data, k, where, CalibrationBin.from_dict))
        for k in data
    )


@dataclass(frozen=True)
class PredictorRow:
    """One model predictor: standardisation, coefficient, HR per SD (bootstrap CI), univariable HR."""

    name: str
    kind: PredictorKind
    mean: float
    sd: float
    coefficient_per_sd: float
    hr_per_sd: float | None  # None if exp(coefficient) overflows (a separated fit)
    hr_per_sd_bootstrap_ci: tuple[float | None, float | None]
    train_min: float
    train_max: float
    univariable_hr_per_sd: float | None
    univariable_ci: tuple[float | None, float | None]
    univariable_p: float | None
    univariable_note: str | None = None  # why the univariable figures are None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind.value,
            "mean": self.mean,
            "sd": self.sd,
            "coefficient_per_sd": self.coefficient_per_sd,
            "hr_per_sd": self.hr_per_sd,
            "hr_per_sd_bootstrap_ci": list(self.hr_per_sd_bootstrap_ci),
            "train_min": self.train_min,
            "train_max": self.train_max,
            "univariable_hr_per_sd": self.univariable_hr_per_sd,
            "univariable_ci": list(self.univariable_ci),
            "univariable_p": self.univariable_p,
        }
        if self.univariable_note is not None:
            out["univariable_note"] = self.univariable_note
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "predictor") -> PredictorRow:
        data = section(data, where)
        kind = read_str(data, "kind", where)
        if kind not in {k.value for k in PredictorKind}:
            raise MalformedRecord(f"{where}.kind", "must be gene or covariate")
        return cls(
            name=read_str(data, "name", where),
            kind=PredictorKind(kind),
            mean=read_float(data, "mean", where),
            sd=read_float(data, "sd", where),
            coefficient_per_sd=read_float(data, "coefficient_per_sd", where),
            hr_per_sd=read_optional_float(data, "hr_per_sd", where),
            hr_per_sd_bootstrap_ci=read_pair(data, "hr_per_sd_bootstrap_ci", where),
            train_min=read_float(data, "train_min", where),
            train_max=read_float(data, "train_max", where),
            univariable_hr_per_sd=read_optional_float(data, "univariable_hr_per_sd", where),
            univariable_ci=read_pair(data, "univariable_ci", where),
            univariable_p=read_optional_float(data, "univariable_p", where),
            univariable_note=read_optional_str(data, "univariable_note", where),
        )


@dataclass(frozen=True)
class BootstrapFit:
    """Refits on patient resamples at the chosen penalty: their coefficients and S0 at the risk horizons.

    ``baseline_at`` pairs a horizon (years) with S0_b(horizon) of every refit; None (``null`` in the file)
    where that resample's follow-up ended before the horizon.
    """

    n: int
    seed: int
    method: str
    coefficients: tuple[tuple[float, ...], ...]  # refit x predictor (per SD)
    baseline_at: tuple[tuple[float, tuple[float | None, ...]], ...]

    def draws_at(self, years: float) -> tuple[float | None, ...] | None:
        return next((draws for h, draws in self.baseline_at if h == years), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "seed": self.seed,
            "method": self.method,
            "coefficients": [list(row) for row in self.coefficients],
            "baseline_survival_at": {horizon_key(h): list(draws) for h, draws in self.baseline_at},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "bootstrap_fit") -> BootstrapFit:
        data = section(data, where)
        rows = read_list(data, "coefficients", where)
        coefficients = tuple(_numbers(row, f"{where}.coefficients[{i}]") for i, row in enumerate(rows))
        at = read_section(data, "baseline_survival_at", where)
        here = f"{where}.baseline_survival_at"
        baseline = tuple((parse_horizon_key(k, here), read_optional_floats(at, k, here)) for k in at)
        return cls(
            n=read_int(data, "n", where),
            seed=read_int(data, "seed", where),
            method=read_str(data, "method", where),
            coefficients=coefficients,
            baseline_at=baseline,
        )


def risk_settings_to_dict(settings: RiskSettings) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def risk_settings_from_dict(data: Any, where: str = "settings") -> RiskSettings:
    """The calibration settings stored with a model (every field of RiskSettings, checked)."""
    data = section(data, where)
    values: dict[str, Any] = {}
    for spec in fields(RiskSettings):
        default = getattr(RiskSettings(), spec.name)
        if isinstance(default, tuple):
            values[spec.name] = read_floats(data, spec.name, where)
        elif spec.name == "penalty":
            values[spec.name] = read_optional_float(data, spec.name, where)
        elif isinstance(default, int):
            values[spec.name] = read_int(data, spec.name, where)
        else:
            values[spec.name] = read_float(data, spec.name, where)
    return RiskSettings(**values)


@dataclass(frozen=True)
class ExpressionShrinkage:
    """How predicted expression compares with measured expression of the same patients (per gene, summarised).

    ``sd_ratio`` is SD(predicted) / SD(measured): below 1 the predictor shrinks towards the mean, so a model
    fitted on measured values gives compressed risks on predicted ones (calibration slope > 1).
    """

    n_patients: int
    n_genes: int
    median_sd_ratio: float
    min_sd_ratio: float
    max_sd_ratio: float
    median_correlation: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "expression_shrinkage") -> ExpressionShrinkage:
        data = section(data, where)
        return cls(
            n_patients=read_int(data, "n_patients", where),
            n_genes=read_int(data, "n_genes", where),
            median_sd_ratio=read_float(data, "median_sd_ratio", where),
            min_sd_ratio=read_float(data, "min_sd_ratio", where),
            max_sd_ratio=read_float(data, "max_sd_ratio", where),
            median_correlation=read_optional_float(data, "median_correlation", where),
        )


@dataclass(frozen=True)
class SubgroupPerformance:
    """Out-of-fold Harrell's C in one level of a declared subgroup (TRIPOD+AI item 14); counts, no patient data.

    ``harrell_c`` and its bootstrap CI are None (with a ``note``) where the level has too few events or
    comparable pairs; ``bootstrap_valid`` counts the resamples on which C was defined.
    """

    subgroup: str  # the declaration, e.g. "age:50" or "er"
    level: str  # e.g. "age < 50" or "er = positive"
    n: int
    events: int
    harrell_c: float | None
    ci_lower: float | None
    ci_upper: float | None
    bootstrap_valid: int
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "subgroup_performance") -> SubgroupPerformance:
        data = section(data, where)
        return cls(
            subgroup=read_str(data, "subgroup", where),
            level=read_str(data, "level", where),
            n=read_int(data, "n", where),
            events=read_int(data, "events", where),
            harrell_c=read_optional_float(data, "harrell_c", where),
            ci_lower=read_optional_float(data, "ci_lower", where),
            ci_upper=read_optional_float(data, "ci_upper", where),
            bootstrap_valid=read_int(data, "bootstrap_valid", where),
            note=read_optional_str(data, "note", where),
        )
