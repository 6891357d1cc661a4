"""The risk model file (self-contained, auditable JSON) and applying it to one patient.

A :class:`RiskModel` holds everything needed to score a patient and to report on the model without
the calibration data: standardisation, coefficients, the Breslow baseline survival, frozen risk-group
cut-offs, the training linear-predictor distribution (for the 0-100 score), bootstrap refits (for
confidence intervals of absolute risk), and the cross-validated performance, Kaplan-Meier curves and
calibration tables that the model card and the PDF report draw. Every section is a typed frozen record
(:mod:`sequoia_clinic.survival.records`); :meth:`RiskModel.from_dict` checks each one and names the file
and the key of any malformed value, and ``RiskModel.from_dict(model.to_dict()) == model``. The file's
``baseline_survival_at`` section is not stored in memory: it is S0 at :data:`RISK_HORIZONS`, recomputed.
A :class:`PatientRisk` carries one :class:`HorizonRisk` per horizon. :meth:`RiskModel.load` reads the file
within a size and nesting limit (finite numbers only) and checks it against
``schemas/risk_model.schema.json`` before the records read it.

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
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from sequoia_clinic.errors import RiskModelError
from sequoia_clinic.fileio import JsonLimitError, read_json_bounded, write_json_atomic
from sequoia_clinic.qc import QCCode, QCWarning
from sequoia_clinic.settings import RiskSettings
from sequoia_clinic.survival.baseline import baseline_at
from sequoia_clinic.survival.clinical import CovariateSpec
from sequoia_clinic.survival.cutoffs import assign_groups
from sequoia_clinic.survival.population import Population
from sequoia_clinic.survival.records import (
    BootstrapFit,
    CalibrationCurve,
    CrossValidatedKM,
    ExpressionShrinkage,
    ExpressionSource,
    GroupRule,
    MalformedRecord,
    PenaltyChoice,
    Performance,
    PHCheck,
    PredictorRow,
    SignatureSummary,
    SubgroupPerformance,
    TrainingSummary,
    calibration_plot_from_dict,
    calibration_plot_to_dict,
    horizon_key,
    jsonable,
    read_float,
    read_floats,
    read_optional_float,
    read_optional_str,
    read_records,
    read_section,
    read_str,
    read_strs,
    risk_settings_from_dict,
    risk_settings_to_dict,
)

FORMAT = "sequoia-clinic/risk-model"
FORMAT_VERSION = 1
RISK_HORIZONS = (5.0, 10.0)
SCORE_DEFINITION = (
    "score = percentile (0-100) of the patient's linear predictor among the apparent linear predictors "
    "of the calibration cohort (mid-rank for ties); it ranks a patient against that cohort only"
)
SD_DEFINITION = "population SD (ddof 0)"
BASELINE_ESTIMATOR = "Breslow, at lp = 0 (every predictor at its training mean)"
SCALE_WARNING_FRACTION = 0.5  # more genes than this outside the training range: probably another scale
MIN_VALID_BOOTSTRAP = 0.9  # share of refits that must estimate S0(t) for a risk CI at t


@dataclass(frozen=True)
class HorizonRisk:
    """Absolute risk by ``years`` with its 95% CI; ``risk`` None where the model cannot estimate it."""

    years: float
    risk: float | None
    ci_lower: float | None = None
    ci_upper: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"years": self.years, "risk": self.risk, "ci_lower": self.ci_lower, "ci_upper": self.ci_upper}


@dataclass(frozen=True)
class PatientRisk:
    """One patient's risk from a :class:`RiskModel` (times in years)."""

    linear_predictor: float
    score: float  # 0-100 percentile in the calibration cohort (see SCORE_DEFINITION)
    group: str
    group_index: int
    horizons: tuple[HorizonRisk, ...]  # one per RISK_HORIZONS, by increasing years
    z_scores: dict[str, float] = field(default_factory=dict)
    out_of_range: list[str] = field(default_factory=list)
    flags: list[QCWarning] = field(default_factory=list)
    score_definition: str = SCORE_DEFINITION

    def at(self, years: float) -> HorizonRisk | None:
        """The risk at ``years``, if the model reports that horizon."""
        return next((h for h in self.horizons if h.years == years), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "linear_predictor": self.linear_predictor,
            "score": self.score,
            "score_definition": self.score_definition,
            "group": self.group,
            "group_index": self.group_index,
            "horizons": [h.to_dict() for h in self.horizons],
            "z_scores": dict(self.z_scores),
            "out_of_range": list(self.out_of_range),
            "flags": [w.message for w in self.flags],
        }


@dataclass(frozen=True, kw_only=True)
class RiskModel:
    """A calibrated Cox risk model: what scoring needs, then the typed audit records of its calibration."""

    # ---- scoring ----------------------------------------------------------------------------------
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
    groups: GroupRule  # frozen cut-offs (lp scale) and group names
    training_lp: tuple[float, ...]  # sorted apparent linear predictors of the calibration cohort
    bootstrap: BootstrapFit  # refits for the absolute-risk CIs
    max_follow_up: float = math.inf  # years; no absolute risk after it (nor after the last baseline time)
    time_unit: str = "years"
    # ---- audit: how it was calibrated and how well it does (model card, report) ----------------------
    created_by: str
    signature_details: SignatureSummary
    endpoint: str
    cohort: str
    expression_source: ExpressionSource
    model_form: str
    penalty: PenaltyChoice
    training: TrainingSummary
    performance: Performance
    ph_check: PHCheck
    cross_validated_km: CrossValidatedKM
    calibration_plot: tuple[CalibrationCurve, ...]
    predictor_table: tuple[PredictorRow, ...]  # one row per predictor, genes then covariates
    settings: RiskSettings
    fit_warnings: tuple[str, ...] = ()  # about the fit itself (e.g. implausibly large coefficients)
    notes: tuple[str, ...] = ()  # limitations, shown on the model card
    clinical: tuple[CovariateSpec, ...] = ()  # typed clinical covariates (their predictors are `covariates`)
    population: Population | None = None  # intended population and development data (TRIPOD+AI)
    expression_shrinkage: ExpressionShrinkage | None = None  # predicted vs measured spread, when known
    subgroup_performance: tuple[SubgroupPerformance, ...] = ()  # calibrate --subgroup (TRIPOD+AI item 14)

    # ---- views --------------------------------------------------------------------------------------
    @property
    def predictors(self) -> tuple[str, ...]:
        return self.genes + self.covariates

    @property
    def cutoffs(self) -> tuple[float, ...]:
        return self.groups.cutoffs

    @property
    def group_names(self) -> tuple[str, ...]:
        return self.groups.names

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
        draws = self.bootstrap.draws_at(t)
        if s0 is None or draws is None or not self.bootstrap.coefficients:
            return None
        s0_b = np.array([math.nan if s is None else s for s in draws], dtype=float)
        valid = np.isfinite(s0_b)  # None: that refit's resample ended before t
        if valid.sum() < max(2, MIN_VALID_BOOTSTRAP * s0_b.size):
            return None
        lp_b = np.asarray(self.bootstrap.coefficients)[valid] @ z
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
        """Score one patient: linear predictor, 0-100 score, group, absolute risk at RISK_HORIZONS (95% CI)."""
        vector = self._vector(expression, covariates)
        z = (vector - np.asarray(self.means)) / np.asarray(self.sds)
        lp = float(z @ np.asarray(self.coefficients))
        low, high = np.asarray(self.train_min), np.asarray(self.train_max)
        outside = [
            n for n, v, lo, hi in zip(self.predictors, vector, low, high, strict=True) if v < lo or v > hi
        ]
        flags = self._flags(lp, outside)
        horizons = []
        for t in RISK_HORIZONS:
            risk = self.absolute_risk(lp, t)
            interval = self.risk_interval(z, lp, t) if risk is not None else None
            horizons.append(HorizonRisk(t, risk, *(interval or (None, None))))
            if risk is None:
                flags.append(
                    QCWarning(
                        QCCode.HORIZON_NOT_ESTIMABLE,
                        f"absolute risk at {t:g} years not estimable: calibration follow-up ends at "
                        f"{self.follow_up_end:.1f} years",
                    )
                )
            elif interval is None and self.bootstrap.coefficients:
                flags.append(
                    QCWarning(
                        QCCode.RISK_CI_NOT_ESTIMABLE,
                        f"95% CI of the {t:g}-year risk not estimable: too few bootstrap refits reach it",
                    )
                )
        group_index = self.group_of(lp)
        return PatientRisk(
            linear_predictor=lp,
            score=self.percentile(lp),
            group=self.group_names[group_index],
            group_index=group_index,
            horizons=tuple(horizons),
            z_scores={name: float(v) for name, v in zip(self.predictors, z, strict=True)},
            out_of_range=outside,
            flags=flags,
        )

    @property
    def follow_up_end(self) -> float:
        """The longest follow-up of the calibration cohort (years)."""
        return min(self.max_follow_up, self.baseline_times[-1]) if self.baseline_times else self.max_follow_up

    def _flags(self, lp: float, outside: list[str]) -> list[QCWarning]:
        flags = [QCWarning(QCCode.RISK_MODEL_FIT, f"risk model warning: {w}") for w in self.fit_warnings]
        if outside:
            flags.append(
                QCWarning(
                    QCCode.INPUTS_OUT_OF_RANGE,
                    f"{len(outside)} of {len(self.predictors)} inputs outside the calibration range",
                )
            )
        if len(outside) > SCALE_WARNING_FRACTION * len(self.predictors):
            flags.append(
                QCWarning(
                    QCCode.INPUTS_ON_OTHER_SCALE,
                    "most inputs are outside the calibration range: the expression is probably on another scale",
                )
            )
        if lp < self.training_lp[0] or lp > self.training_lp[-1]:
            flags.append(
                QCWarning(
                    QCCode.LINEAR_PREDICTOR_EXTRAPOLATED,
                    "linear predictor outside the calibration cohort's range (extrapolation)",
                )
            )
        return flags

    # ---- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The model file's JSON object (format ``sequoia-clinic/risk-model`` v1)."""
        audit = {
            "created_by": self.created_by,
            "signature": self.signature_details.to_dict(),
            "endpoint": self.endpoint,
            "cohort": self.cohort,
            # 'measured' (RNA assay), 'predicted' (from slides by `predict`) or 'unknown'; `score` warns
            # unless 'predicted', since a model fitted on one scale is not valid on the other.
            "expression_source": self.expression_source.value,
            "model_form": self.model_form,
            "penalty": self.penalty.to_dict(),
            "baseline_survival_at": {horizon_key(t): self.baseline_survival_at(t) for t in RISK_HORIZONS},
            "groups": self.groups.to_dict(),
            "training": self.training.to_dict(),
            "performance": self.performance.to_dict(),
            "ph_check": self.ph_check.to_dict(),
            "cross_validated_km": self.cross_validated_km.to_dict(),
            "calibration_plot": calibration_plot_to_dict(self.calibration_plot),
            "predictors": [row.to_dict() for row in self.predictor_table],
            "bootstrap_fit": self.bootstrap.to_dict(),
            "settings": risk_settings_to_dict(self.settings),
            "fit_warnings": list(self.fit_warnings),
            "notes": list(self.notes),
            "clinical_covariates": [spec.to_dict() for spec in self.clinical],
            "population": None if self.population is None else self.population.to_dict(),
            "expression_shrinkage": None
            if self.expression_shrinkage is None
            else self.expression_shrinkage.to_dict(),
        }
        if self.subgroup_performance:  # optional key: files without subgroups are written as before
            audit["subgroup_performance"] = [row.to_dict() for row in self.subgroup_performance]
        core = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "signature_name": self.signature,
            "genes": list(self.genes),
            "covariates": list(self.covariates),
            "standardisation": {
                "mean": list(self.means),
                "sd": list(self.sds),
                "sd_definition": SD_DEFINITION,
            },
            "coefficients": dict(zip(self.predictors, self.coefficients, strict=True)),
            "training_range": {"min": list(self.train_min), "max": list(self.train_max)},
            "time_unit": self.time_unit,
            "max_follow_up": self.max_follow_up,
            "baseline_survival": {
                "estimator": BASELINE_ESTIMATOR,
                "times": list(self.baseline_times),
                "survival": list(self.baseline_survival),
            },
            "score_scale": {"definition": SCORE_DEFINITION, "training_lp_sorted": list(self.training_lp)},
        }
        return jsonable({**audit, **core})

    def save(self, path: Path | str) -> None:
        """Write the model JSON atomically."""
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path | str | None = None) -> RiskModel:
        """Read and check a model file's JSON object; any malformed section is a RiskModelError naming
        ``source`` and the key (e.g. ``performance.metrics.uno_c.mean``)."""
        if data.get("format") != FORMAT:
            raise RiskModelError(
                "not a sequoia-clinic risk model", source, "Pass a file written by `calibrate`."
            )
        if data.get("format_version") != FORMAT_VERSION:
            raise RiskModelError(
                f"unsupported risk-model version {data.get('format_version')}", source, "Recalibrate."
            )
        try:
            model = cls._read(data)
        except MalformedRecord as exc:
            raise RiskModelError(
                f"malformed risk model: '{exc.where}' {exc.expected}", source, "Recalibrate."
            ) from None
        model.validate(source)
        return model

    @classmethod
    def _read(cls, data: Mapping[str, Any]) -> RiskModel:
        genes = read_strs(data, "genes", "")
        covariates = read_strs(data, "covariates", "")
        coefficients = read_section(data, "coefficients", "")
        standardisation = read_section(data, "standardisation", "")
        training_range = read_section(data, "training_range", "")
        baseline = read_section(data, "baseline_survival", "")
        score_scale = read_section(data, "score_scale", "")
        # files written before expression sources were recorded: unknown
        expression_source = read_optional_str(data, "expression_source", "") or ExpressionSource.UNKNOWN.value
        if expression_source not in {s.value for s in ExpressionSource}:
            raise MalformedRecord("expression_source", "must be measured, predicted or unknown")
        return cls(
            signature=read_str(data, "signature_name", ""),
            genes=genes,
            covariates=covariates,
            means=read_floats(standardisation, "mean", "standardisation"),
            sds=read_floats(standardisation, "sd", "standardisation"),
            coefficients=tuple(read_float(coefficients, p, "coefficients") for p in genes + covariates),
            train_min=read_floats(training_range, "min", "training_range"),
            train_max=read_floats(training_range, "max", "training_range"),
            baseline_times=read_floats(baseline, "times", "baseline_survival"),
            baseline_survival=read_floats(baseline, "survival", "baseline_survival"),
            groups=GroupRule.from_dict(read_section(data, "groups", ""), "groups"),
            training_lp=read_floats(score_scale, "training_lp_sorted", "score_scale"),
            bootstrap=BootstrapFit.from_dict(read_section(data, "bootstrap_fit", ""), "bootstrap_fit"),
            max_follow_up=read_optional_float(data, "max_follow_up", "") or math.inf,
            time_unit=read_str(data, "time_unit", ""),
            created_by=read_str(data, "created_by", ""),
            signature_details=SignatureSummary.from_dict(read_section(data, "signature", ""), "signature"),
            endpoint=read_str(data, "endpoint", ""),
            cohort=read_str(data, "cohort", ""),
            expression_source=ExpressionSource(expression_source),
            model_form=read_str(data, "model_form", ""),
            penalty=PenaltyChoice.from_dict(read_section(data, "penalty", ""), "penalty"),
            training=TrainingSummary.from_dict(read_section(data, "training", ""), "training"),
            performance=Performance.from_dict(read_section(data, "performance", ""), "performance"),
            ph_check=PHCheck.from_dict(read_section(data, "ph_check", ""), "ph_check"),
            cross_validated_km=CrossValidatedKM.from_dict(
                read_section(data, "cross_validated_km", ""), "cross_validated_km"
            ),
            calibration_plot=calibration_plot_from_dict(
                read_section(data, "calibration_plot", ""), "calibration_plot"
            ),
            predictor_table=read_records(data, "predictors", "", PredictorRow.from_dict),
            settings=risk_settings_from_dict(read_section(data, "settings", ""), "settings"),
            fit_warnings=read_strs(data, "fit_warnings", "") if "fit_warnings" in data else (),
            notes=read_strs(data, "notes", ""),
            clinical=read_records(data, "clinical_covariates", "", CovariateSpec.from_dict)
            if data.get("clinical_covariates")
            else (),
            population=Population.from_dict(data["population"])
            if data.get("population") is not None
            else None,
            expression_shrinkage=ExpressionShrinkage.from_dict(data["expression_shrinkage"])
            if data.get("expression_shrinkage") is not None
            else None,
            subgroup_performance=read_records(data, "subgroup_performance", "", SubgroupPerformance.from_dict)
            if "subgroup_performance" in data
            else (),
        )

    def validate(self, source: Path | str | None = None) -> None:
        """Consistency of the parts (lengths, units, a non-increasing baseline); RiskModelError naming source."""
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
        if tuple(row.name for row in self.predictor_table) != self.predictors:
            raise RiskModelError(
                "the predictor table does not list the model's predictors", source, "Recalibrate."
            )
        if len(self.group_names) != len(self.cutoffs) + 1:
            raise RiskModelError("group names do not match the cut-offs", source, "Recalibrate.")
        if self.time_unit != "years":
            raise RiskModelError(f"time unit '{self.time_unit}' (expected years)", source, "Recalibrate.")
        if not self.training_lp or any(s <= 0 for s in self.sds):
            raise RiskModelError("empty score scale or zero SDs", source, "Recalibrate.")
        if len(self.baseline_times) != len(self.baseline_survival):
            raise RiskModelError("baseline times and survival differ in length", source, "Recalibrate.")
        if any(np.diff(self.baseline_survival) > 1e-12):
            raise RiskModelError("baseline survival increases with time", source, "Recalibrate.")
        encoded = tuple(p for spec in self.clinical for p in spec.predictors)
        if self.clinical and encoded != self.covariates:
            raise RiskModelError(
                "the clinical covariates do not match the model's covariate predictors",
                source,
                "Recalibrate.",
            )
        if any(len(row) != n for row in self.bootstrap.coefficients):
            raise RiskModelError(
                "bootstrap refits have the wrong number of coefficients", source, "Recalibrate."
            )

    @classmethod
    def load(cls, path: Path | str) -> RiskModel:
        path = Path(path)
        if not path.is_file():
            raise RiskModelError("risk model not found", path, "Pass a JSON file written by `calibrate`.")
        try:
            # NaN/Infinity are read, so that the records name the key that holds them
            data = read_json_bounded(path, MAX_RISK_MODEL_BYTES, MAX_RISK_MODEL_DEPTH, finite_only=False)
        except JsonLimitError as exc:
            raise RiskModelError(f"the risk model {exc}", path, "Recalibrate.") from None
        if not isinstance(data, dict):
            raise RiskModelError("not a JSON object", path, "Recalibrate.")
        check_risk_model_schema(data, path)
        return cls.from_dict(data, path)


MAX_RISK_MODEL_BYTES = 32 << 20  # a risk-model file larger than this is refused unread
MAX_RISK_MODEL_DEPTH = 16  # nesting limit of a risk-model file (the files calibrate writes nest at most 6)


@cache
def _risk_model_validator() -> jsonschema.Draft202012Validator:
    text = resources.files("sequoia_clinic.schemas").joinpath("risk_model.schema.json").read_text("utf-8")
    return jsonschema.Draft202012Validator(json.loads(text))


def check_risk_model_schema(data: dict[str, Any], path: Path) -> None:
    """The outer shape of a risk-model file (schemas/risk_model.schema.json), before the typed records."""
    errors = sorted(_risk_model_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise RiskModelError(
            f"malformed risk model: '{where}' fails the {errors[0].validator!r} rule", path, "Recalibrate."
        )


def _clip(s0: float) -> float:
    return min(max(s0, 1e-12), 1 - 1e-12)


def _cloglog_survival(eta: float) -> float:
    """exp(-exp(eta)), without overflow for the huge linear predictors of a separated fit."""
    with np.errstate(over="ignore"):
        return float(np.exp(-np.exp(np.float64(eta))))
