"""The risk model file (self-contained, auditable JSON) and applying it to one patient.

A :class:`RiskModel` holds everything needed to score a patient and to report on the model without
the calibration data: standardisation, coefficients, the Breslow baseline survival, frozen risk-group
cut-offs, the training linear-predictor distribution (for the 0-100 score), bootstrap refits (for
confidence intervals of absolute risk), and the cross-validated performance, Kaplan-Meier curves and
calibration tables that the model card and the PDF report draw.

Model:  z = (x - mean) / sd;  lp = z . beta;  S(t | x) = S0(t) ** exp(lp);  risk(t) = 1 - S(t | x).
Score:  the percentile (0-100) of lp among the calibration cohort's apparent linear predictors.
Risk CI: the bootstrap refits give lp_b and S0_b(t); the SD of log(-log S_b(t | x)) over refits sets a
normal interval on the complementary log-log scale (the scale of Greenwood's log-log KM intervals), so
the interval always lies in [0, 1] and contains the point estimate.
Horizons after the calibration cohort's longest follow-up are not estimable: S0 is never carried
forward, so such a risk (and its CI) is None and the patient result carries a flag saying why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sequoia_clinic.errors import RiskModelError
from sequoia_clinic.fileio import write_json_atomic
from sequoia_clinic.survival.cox import baseline_at
from sequoia_clinic.survival.cutoffs import assign_groups

FORMAT = "sequoia-clinic/risk-model"
FORMAT_VERSION = 1
RISK_HORIZONS = (5.0, 10.0)
SCORE_DEFINITION = (
    "score = percentile (0-100) of the patient's linear predictor among the apparent linear predictors "
    "of the calibration cohort (mid-rank for ties); it ranks a patient against that cohort only"
)
SCALE_WARNING_FRACTION = 0.5  # more genes than this outside the training range: probably another scale
MIN_VALID_BOOTSTRAP = 0.9  # share of refits that must estimate S0(t) for a risk CI at t


@dataclass(frozen=True)
class PatientRisk:
    """One patient's risk from a :class:`RiskModel` (times in years)."""

    linear_predictor: float
    score: float  # 0-100 percentile in the calibration cohort (see SCORE_DEFINITION)
    group: str
    group_index: int
    risk_5y: float | None
    risk_5y_ci: tuple[float, float] | None
    risk_10y: float | None
    risk_10y_ci: tuple[float, float] | None
    z_scores: dict[str, float] = field(default_factory=dict)
    out_of_range: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    score_definition: str = SCORE_DEFINITION

    def to_dict(self) -> dict[str, Any]:
        return {
            "linear_predictor": self.linear_predictor,
            "score": self.score,
            "score_definition": self.score_definition,
            "group": self.group,
            "group_index": self.group_index,
            "risk_5y": self.risk_5y,
            "risk_5y_ci": None if self.risk_5y_ci is None else list(self.risk_5y_ci),
            "risk_10y": self.risk_10y,
            "risk_10y_ci": None if self.risk_10y_ci is None else list(self.risk_10y_ci),
            "z_scores": dict(self.z_scores),
            "out_of_range": list(self.out_of_range),
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class RiskModel:
    """A calibrated Cox risk model. ``info`` holds the audit sections (performance, KM curves, ...)."""

    signature: str
    genes: tuple[str, ...]
    covariates: tuple[str, ...]
    means: tuple[float, ...]  # genes then covariates
    sds: tuple[float, ...]
    coefficients: tuple[float, ...]  # per standardised predictor (per SD)
    train_min: tuple[float, ...]
    train_max: tuple[float, ...]
    baseline_times: tuple[float, ...]  # years
    baseline_survival: tuple[float, ...]
    cutoffs: tuple[float, ...]  # lp scale
    group_names: tuple[str, ...]
    training_lp: tuple[float, ...]  # sorted apparent linear predictors of the calibration cohort
    bootstrap_coefficients: tuple[tuple[float, ...], ...] = ()
    bootstrap_baseline: Mapping[str, tuple[float, ...]] = field(
        default_factory=dict, hash=False
    )  # "5" -> S0_b(5)
    max_follow_up: float = math.inf  # years; no absolute risk after it (nor after the last baseline time)
    time_unit: str = "years"
    info: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    # ---- views used by reports -------------------------------------------------------------------
    @property
    def predictors(self) -> tuple[str, ...]:
        return self.genes + self.covariates

    @property
    def training(self) -> dict[str, Any]:
        return dict(self.info.get("training", {}))

    @property
    def performance(self) -> dict[str, Any]:
        return dict(self.info.get("performance", {}))

    @property
    def cross_validated_km(self) -> dict[str, Any]:
        return dict(self.info.get("cross_validated_km", {}))

    @property
    def predictor_table(self) -> list[dict[str, Any]]:
        return list(self.info.get("predictors", []))

    @property
    def fit_warnings(self) -> list[str]:
        """Warnings about the fit itself (e.g. implausibly large coefficients), stored at calibration."""
        return [str(w) for w in self.info.get("fit_warnings", [])]

    def baseline_survival_at(self, t: float) -> float | None:
        """S0(t), or None beyond the longest follow-up of the calibration cohort (never carried forward)."""
        if t > self.max_follow_up:
            return None
        value = baseline_at(
            np.asarray(self.baseline_times), np.asarray(self.baseline_survival), np.array([t])
        )
        return float(value[0]) if np.isfinite(value[0]) else None

    # ---- scoring -----------------------------------------------------------------------------------
    def linear_predictor(self, values: np.ndarray) -> np.ndarray:
        """lp of raw predictor rows (patients x predictors, genes then covariates)."""
        z = (np.atleast_2d(values) - np.asarray(self.means)) / np.asarray(self.sds)
        return z @ np.asarray(self.coefficients)

    def percentile(self, lp: float) -> float:
        """0-100 mid-rank percentile of lp in the calibration cohort."""
        values = np.asarray(self.training_lp)
        below = np.searchsorted(values, lp - 1e-9, side="left")
        upto = np.searchsorted(values, lp + 1e-9, side="right")
        return float(100.0 * (below + 0.5 * (upto - below)) / values.size)

    def absolute_risk(self, lp: float, t: float) -> float | None:
        """1 - S0(t) ** exp(lp), or None where S0(t) is not estimable."""
        s0 = self.baseline_survival_at(t)
        if s0 is None:
            return None
        with np.errstate(over="ignore"):  # exp(lp) overflows for a separated fit: s0 ** inf = 0
            return float(1.0 - np.power(s0, np.exp(np.float64(lp))))

    def risk_interval(self, z: np.ndarray, lp: float, t: float) -> tuple[float, float] | None:
        """95% CI of the absolute risk at t from the bootstrap refits (complementary log-log scale)."""
        s0 = self.baseline_survival_at(t)
        draws = self.bootstrap_baseline.get(f"{t:g}")
        if s0 is None or draws is None or not self.bootstrap_coefficients:
            return None
        s0_b = np.asarray(draws, dtype=float)
        valid = np.isfinite(s0_b)  # NaN: that refit's resample ended before t
        if valid.sum() < max(2, MIN_VALID_BOOTSTRAP * s0_b.size):
            return None
        lp_b = np.asarray(self.bootstrap_coefficients)[valid] @ z
        eta_b = np.log(-np.log(np.clip(s0_b[valid], 1e-12, 1 - 1e-12))) + lp_b
        eta = math.log(-math.log(_clip(s0))) + lp
        se = float(np.std(eta_b, ddof=1))
        return (1.0 - _cloglog_survival(eta - 1.96 * se), 1.0 - _cloglog_survival(eta + 1.96 * se))

    def group_of(self, lp: float) -> int:
        return int(assign_groups(np.array([lp]), self.cutoffs)[0])

    def _vector(self, expression: Mapping[str, float], covariates: Mapping[str, float] | None) -> np.ndarray:
        missing = [g for g in self.genes if g not in expression]
        if missing:
            raise RiskModelError(
                f"{len(missing)} model gene(s) missing from the expression input: {', '.join(missing[:10])}"
                + (", ..." if len(missing) > 10 else ""),
                fix="Provide every gene of the risk model (SEQUOIA symbols).",
            )
        covariates = covariates or {}
        absent = [c for c in self.covariates if c not in covariates]
        if absent:
            raise RiskModelError(
                f"covariate(s) missing: {', '.join(absent)}", fix="Pass every model covariate."
            )
        values = [expression[g] for g in self.genes] + [covariates[c] for c in self.covariates]
        try:
            vector = np.array(values, dtype=float)
        except (TypeError, ValueError):
            raise RiskModelError("non-numeric value in the model input", fix="Pass numbers.") from None
        bad = [name for name, v in zip(self.predictors, vector, strict=True) if not np.isfinite(v)]
        if bad:
            raise RiskModelError(f"missing or non-finite value for {bad[0]}", fix="Pass finite numbers.")
        return vector

    def apply(
        self, expression: Mapping[str, float], covariates: Mapping[str, float] | None = None
    ) -> PatientRisk:
        """Score one patient: linear predictor, 0-100 score, group, absolute risk at 5 and 10 years (95% CI)."""
        vector = self._vector(expression, covariates)
        z = (vector - np.asarray(self.means)) / np.asarray(self.sds)
        lp = float(z @ np.asarray(self.coefficients))
        low, high = np.asarray(self.train_min), np.asarray(self.train_max)
        outside = [
            n for n, v, lo, hi in zip(self.predictors, vector, low, high, strict=True) if v < lo or v > hi
        ]
        flags = self._flags(lp, outside)
        risks = {t: self.absolute_risk(lp, t) for t in RISK_HORIZONS}
        intervals = {t: self.risk_interval(z, lp, t) for t in RISK_HORIZONS}
        for t in RISK_HORIZONS:
            if risks[t] is None:
                flags.append(
                    f"absolute risk at {t:g} years not estimable: calibration follow-up ends at "
                    f"{self.follow_up_end:.1f} years"
                )
            elif intervals[t] is None and self.bootstrap_coefficients:
                flags.append(
                    f"95% CI of the {t:g}-year risk not estimable: too few bootstrap refits reach it"
                )
        group_index = self.group_of(lp)
        return PatientRisk(
            linear_predictor=lp,
            score=self.percentile(lp),
            group=self.group_names[group_index],
            group_index=group_index,
            risk_5y=risks[5.0],
            risk_5y_ci=intervals[5.0],
            risk_10y=risks[10.0],
            risk_10y_ci=intervals[10.0],
            z_scores={name: float(v) for name, v in zip(self.predictors, z, strict=True)},
            out_of_range=outside,
            flags=flags,
        )

    @property
    def follow_up_end(self) -> float:
        """The longest follow-up of the calibration cohort (years)."""
        return min(self.max_follow_up, self.baseline_times[-1]) if self.baseline_times else self.max_follow_up

    def _flags(self, lp: float, outside: list[str]) -> list[str]:
        flags = [f"risk model warning: {w}" for w in self.fit_warnings]
        if outside:
            flags.append(f"{len(outside)} of {len(self.predictors)} inputs outside the calibration range")
        if len(outside) > SCALE_WARNING_FRACTION * len(self.predictors):
            flags.append(
                "most inputs are outside the calibration range: the expression is probably on another scale"
            )
        if lp < self.training_lp[0] or lp > self.training_lp[-1]:
            flags.append("linear predictor outside the calibration cohort's range (extrapolation)")
        return flags

    # ---- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        core = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "signature_name": self.signature,
            "genes": list(self.genes),
            "covariates": list(self.covariates),
            "standardisation": {
                "mean": list(self.means),
                "sd": list(self.sds),
                "sd_definition": "population SD (ddof 0)",
            },
            "coefficients": dict(zip(self.predictors, self.coefficients, strict=True)),
            "training_range": {"min": list(self.train_min), "max": list(self.train_max)},
            "time_unit": self.time_unit,
            "max_follow_up": self.max_follow_up,
            "baseline_survival": {
                "estimator": "Breslow, at lp = 0 (every predictor at its training mean)",
                "times": list(self.baseline_times),
                "survival": list(self.baseline_survival),
            },
            "groups": {"cutoffs_lp": list(self.cutoffs), "names": list(self.group_names)},
            "score_scale": {"definition": SCORE_DEFINITION, "training_lp_sorted": list(self.training_lp)},
            "bootstrap_fit": {
                "coefficients": [list(row) for row in self.bootstrap_coefficients],
                "baseline_survival_at": {k: list(v) for k, v in self.bootstrap_baseline.items()},
            },
        }
        merged = dict(self.info)
        for key, value in core.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return jsonable(merged)

    def save(self, path: Path | str) -> None:
        """Write the model JSON atomically."""
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path | str | None = None) -> RiskModel:
        if data.get("format") != FORMAT:
            raise RiskModelError(
                "not a sequoia-clinic risk model", source, "Pass a file written by `calibrate`."
            )
        if data.get("format_version") != FORMAT_VERSION:
            raise RiskModelError(
                f"unsupported risk-model version {data.get('format_version')}", source, "Recalibrate."
            )
        try:
            genes = tuple(data["genes"])
            covariates = tuple(data["covariates"])
            predictors = genes + covariates
            coefficients = tuple(float(data["coefficients"][p]) for p in predictors)
            boot = data.get("bootstrap_fit", {})
            model = cls(
                signature=str(data["signature_name"]),
                genes=genes,
                covariates=covariates,
                means=tuple(map(float, data["standardisation"]["mean"])),
                sds=tuple(map(float, data["standardisation"]["sd"])),
                coefficients=coefficients,
                train_min=tuple(map(float, data["training_range"]["min"])),
                train_max=tuple(map(float, data["training_range"]["max"])),
                baseline_times=tuple(map(float, data["baseline_survival"]["times"])),
                baseline_survival=tuple(map(float, data["baseline_survival"]["survival"])),
                cutoffs=tuple(map(float, data["groups"]["cutoffs_lp"])),
                group_names=tuple(map(str, data["groups"]["names"])),
                training_lp=tuple(map(float, data["score_scale"]["training_lp_sorted"])),
                bootstrap_coefficients=tuple(tuple(map(float, row)) for row in boot.get("coefficients", [])),
                bootstrap_baseline={
                    k: tuple(math.nan if s is None else float(s) for s in v)
                    for k, v in boot.get("baseline_survival_at", {}).items()
                },
                max_follow_up=float(data.get("max_follow_up") or math.inf),
                time_unit=str(data["time_unit"]),
                info=dict(data),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RiskModelError(
                f"malformed risk model ({type(exc).__name__}: {exc})", source, "Recalibrate."
            ) from None
        model.validate(source)
        return model

    def validate(self, source: Path | str | None = None) -> None:
        n = len(self.predictors)
        lengths = {
            len(self.means),
            len(self.sds),
            len(self.coefficients),
            len(self.train_min),
            len(self.train_max),
        }
        if lengths != {n}:
            raise RiskModelError("predictor arrays have inconsistent lengths", source, "Recalibrate.")
        if len(self.group_names) != len(self.cutoffs) + 1:
            raise RiskModelError("group names do not match the cut-offs", source, "Recalibrate.")
        if self.time_unit != "years":
            raise RiskModelError(f"time unit '{self.time_unit}' (expected years)", source, "Recalibrate.")
        if not self.training_lp or any(s <= 0 for s in self.sds):
            raise RiskModelError("empty score scale or zero SDs", source, "Recalibrate.")
        if any(np.diff(self.baseline_survival) > 1e-12):
            raise RiskModelError("baseline survival increases with time", source, "Recalibrate.")

    @classmethod
    def load(cls, path: Path | str) -> RiskModel:
        path = Path(path)
        if not path.is_file():
            raise RiskModelError("risk model not found", path, "Pass a JSON file written by `calibrate`.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RiskModelError(f"not valid JSON ({exc.__class__.__name__})", path, "Recalibrate.") from None
        if not isinstance(data, dict):
            raise RiskModelError("not a JSON object", path, "Recalibrate.")
        return cls.from_dict(data, path)


def _clip(s0: float) -> float:
    return min(max(s0, 1e-12), 1 - 1e-12)


def _cloglog_survival(eta: float) -> float:
    """exp(-exp(eta)), without overflow for the huge linear predictors of a separated fit."""
    with np.errstate(over="ignore"):
        return float(np.exp(-np.exp(np.float64(eta))))


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
