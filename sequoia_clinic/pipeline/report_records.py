"""Survival and prediction records → the report's records (the only place that translates between them).

The survival stage knows risk models and patient risks, the predict flow knows slides and tiles, the report
stage knows what a page shows. These functions join them for ``score`` (and, later, the cohort runner).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sequoia_clinic.pipeline.predict import Prediction
from sequoia_clinic.qc import QCCode, QCWarning, unique
from sequoia_clinic.report import (
    AbsoluteRisk,
    CalibrationCohort,
    GeneRow,
    KMCurve,
    Metric,
    QualityControl,
    RiskResult,
    SignatureResult,
    SlideInfo,
)
from sequoia_clinic.survival import PatientRisk, RiskModel

MPP_SOURCES = {
    "user": "--mpp option (user-supplied)",
    "vendor": "slide metadata (vendor pixel size)",
    "tiff-resolution": "TIFF resolution tags",
    "objective-power": "estimated from objective power (10 / power)",
}
# Warnings the report derives itself, in its own words (report/content.py): the pipeline's are dropped.
REPORT_DERIVED = frozenset(
    {QCCode.UNTRAINED_BUNDLE, QCCode.INPUTS_OUT_OF_RANGE, QCCode.LINEAR_PREDICTOR_EXTRAPOLATED}
)


def cohort_record(model: RiskModel) -> CalibrationCohort:
    info = model.info
    training = model.training
    km = model.cross_validated_km
    groups = km.get("groups", [])
    ticks = tuple(float(t) for t in groups[0]["ticks"]) if groups else ()
    curves = tuple(
        KMCurve(
            group=str(g["label"]).capitalize(),
            times=tuple(map(float, g["times"])),
            survival=tuple(map(float, g["survival"])),
            lower=tuple(map(float, g["lower"])),
            upper=tuple(map(float, g["upper"])),
            at_risk=tuple(int(a) for a in g["at_risk"]),
            n=int(g["n"]),
            events=int(g["events"]),
        )
        for g in groups
    )
    return CalibrationCohort(
        name=str(info.get("cohort", "calibration cohort")),
        n=int(training.get("n", len(model.training_lp))),
        events=int(training.get("events", 0)),
        endpoint=_endpoint(str(info.get("endpoint", "event"))),
        time_unit="years",
        linear_predictors=tuple(float(v) for v in model.training_lp),
        cutoffs=tuple(round(model.percentile(c), 2) for c in model.cutoffs),
        cutoff_source=str(info.get("groups", {}).get("description", "fixed at calibration")),
        km_curves=curves,
        at_risk_times=ticks,
        performance=_metrics(model.performance),
        description=str(training.get("cohort", "")),
        lp_cutoffs=tuple(float(c) for c in model.cutoffs),
    )


def _endpoint(text: str) -> str:
    return "Distant metastasis-free survival" if "metastasis" in text.lower() else text


def _metrics(performance: dict[str, Any]) -> tuple[Metric, ...]:
    metrics = performance.get("metrics", {})
    design = performance.get("design", {})
    tau = design.get("uno_tau_years")
    ibs_times = design.get("ibs_times_years") or []
    ibs_note = f"{min(ibs_times):g}-{max(ibs_times):g} years" if ibs_times else ""
    wanted = (
        ("harrell_c", "Harrell C", ""),
        ("uno_c", "Uno C", f"tau = {tau:.3g} years" if _finite(tau) else ""),
        ("auc_5y", "AUC at 5 years", "cumulative/dynamic"),
        ("auc_10y", "AUC at 10 years", "cumulative/dynamic"),
        ("ibs", "Integrated Brier score", ibs_note),
        ("calibration_slope_10y", "Calibration slope", "at 10 years; 1 is ideal"),
    )
    out = []
    for key, name, note in wanted:
        m = metrics.get(key)
        if isinstance(m, dict) and _finite(m.get("mean")):
            out.append(Metric(name, float(m["mean"]), _opt(m.get("ci_lower")), _opt(m.get("ci_upper")), note))
    return tuple(out)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _opt(value: Any) -> float | None:
    return float(value) if _finite(value) else None


def risk_result(model: RiskModel, risk: PatientRisk) -> RiskResult:
    horizons = []
    for years, value, ci in ((5.0, risk.risk_5y, risk.risk_5y_ci), (10.0, risk.risk_10y, risk.risk_10y_ci)):
        if value is not None:
            horizons.append(AbsoluteRisk(years, float(value), *(ci if ci is not None else (None, None))))
    lp = risk.linear_predictor
    return RiskResult(
        linear_predictor=lp,
        score=risk.score,
        group_names=tuple(n.capitalize() for n in model.group_names),
        group_index=risk.group_index,
        absolute_risks=tuple(horizons),
        linear_predictor_out_of_range=bool(lp < model.training_lp[0] or lp > model.training_lp[-1]),
    )


def signature_result(model: RiskModel, risk: PatientRisk, expression: dict[str, float]) -> SignatureResult:
    table = {row["name"]: row for row in model.predictor_table}
    rows = []
    for gene in model.genes:
        z = float(risk.z_scores[gene])
        rows.append(
            GeneRow(
                gene=gene,
                expression=float(expression[gene]),
                z_score=z,
                percentile=float(100.0 * 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))),
                hazard_ratio_per_sd=float(table.get(gene, {}).get("hr_per_sd", 1.0)),
                in_calibration_range=gene not in risk.out_of_range,
            )
        )
    return SignatureResult(
        name=model.signature,
        expression_unit="model units",
        genes=tuple(rows),
        description=(
            f"{len(model.genes)} genes of the {model.signature} signature; z-scores against the calibration "
            "cohort's mean and SD; percentile assumes a normal distribution of each gene in that cohort."
        ),
    )


def heatmap_genes(model: RiskModel, count: int) -> list[str]:
    """The signature genes with the largest absolute model coefficient (non-zero first)."""
    coefs = dict(zip(model.genes, model.coefficients[: len(model.genes)], strict=True))
    ranked = sorted(model.genes, key=lambda g: (-abs(coefs[g]), g))
    return ranked[:count]


def calibration_warning(model: RiskModel) -> QCWarning | None:
    """A warning unless the risk model says it was calibrated on slide-predicted expression."""
    source = str(model.info.get("expression_source", "unknown"))
    if source == "predicted":
        return None
    what = "measured" if source == "measured" else "an unstated kind of"
    return QCWarning(
        QCCode.RISK_MODEL_NOT_ON_PREDICTED,
        f"The risk model was calibrated on {what} expression, not on expression predicted from slides: its "
        "risks for this slide are not valid until it is re-calibrated on predicted expression "
        "(sequoia-clinic calibrate).",
    )


def quality_control(prediction: Prediction, risk: PatientRisk, model: RiskModel) -> QualityControl:
    """Tissue and tile figures plus every QC warning, minus those the report words itself (by code)."""
    info = prediction.slide_info
    width, height = info.level_dimensions[0]
    area_mm2 = prediction.mask.tissue_fraction * width * height * info.mpp[0] * info.mpp[1] / 1e6
    own = calibration_warning(model)
    warnings = [*([own] if own is not None else []), *prediction.qc_warnings, *risk.flags]
    return QualityControl(
        tissue_area_mm2=round(float(area_mm2), 2),
        tissue_fraction=round(float(prediction.mask.tissue_fraction), 4),
        tiles_kept=int(len(prediction.kept_indices)),
        tiles_used=int(len(prediction.used_indices)),
        warnings=unique([w for w in warnings if w.code not in REPORT_DERIVED]),
    )


def slide_record(slide: Path, prediction: Prediction) -> SlideInfo:
    """The report's slide block (path as given, content hash, format, size, pixel size and its source)."""
    info = prediction.slide_info
    width, height = info.level_dimensions[0]
    return SlideInfo(
        path=str(slide),
        sha256=prediction.slide_sha256,
        format=info.format,
        width_px=int(width),
        height_px=int(height),
        mpp=float(info.mpp[0]),
        mpp_source=MPP_SOURCES.get(info.mpp_source, info.mpp_source),
    )
