"""Survival and prediction records → the report's records (the only place that translates between them).

The survival stage knows risk models and patient risks, the predict flow knows slides and tiles, the report
stage knows what a page shows. These functions join them for ``score`` (and, later, the cohort runner).
"""

from __future__ import annotations

import math
from pathlib import Path

from sequoia_clinic.bundles.reliability import GeneReliability
from sequoia_clinic.clinical_choices import SpecimenType
from sequoia_clinic.pipeline.predict import Prediction
from sequoia_clinic.pipeline.repeatability import Repeatability
from sequoia_clinic.qc import QCCode, QCWarning, unique
from sequoia_clinic.report.model import (
    AbsoluteRisk,
    CalibrationCohort,
    ClinicalSummary,
    GeneRow,
    KMCurve,
    Metric,
    QualityControl,
    RepeatabilityResult,
    RiskResult,
    SignatureResult,
    SlideInfo,
)
from sequoia_clinic.survival.clinical import ClinicalInputs
from sequoia_clinic.survival.model import PatientRisk, RiskModel
from sequoia_clinic.survival.records import ExpressionSource, Performance, PredictorRow

MPP_SOURCES = {
    "user": "--mpp option (user-supplied)",
    "vendor": "slide metadata (vendor pixel size)",
    "tiff-resolution": "TIFF resolution tags",
    "objective-power": "estimated from objective power (10 / power)",
}
MAX_LOG_HR = 700.0  # exp(700) ~ 1e304: the largest HR per SD a report shows (a separated fit)
# Warnings the report derives itself, in its own words (report/content.py): the pipeline's are dropped.
REPORT_DERIVED = frozenset(
    {QCCode.UNTRAINED_BUNDLE, QCCode.INPUTS_OUT_OF_RANGE, QCCode.LINEAR_PREDICTOR_EXTRAPOLATED}
)


def cohort_record(model: RiskModel) -> CalibrationCohort:
    groups = model.cross_validated_km.groups
    ticks = groups[0].ticks if groups else ()
    curves = tuple(
        KMCurve(
            group=g.label.capitalize(),
            times=g.times,
            survival=g.survival,
            lower=g.lower,
            upper=g.upper,
            at_risk=g.at_risk,
            n=g.n,
            events=g.events,
        )
        for g in groups
    )
    return CalibrationCohort(
        name=model.cohort,
        n=model.training.n,
        events=model.training.events,
        endpoint=_endpoint(model.endpoint),
        time_unit="years",
        linear_predictors=model.training_lp,
        cutoffs=tuple(round(model.percentile(c), 2) for c in model.cutoffs),
        cutoff_source=model.groups.description,
        km_curves=curves,
        at_risk_times=ticks,
        performance=_metrics(model.performance),
        description=model.training.cohort,
        lp_cutoffs=model.cutoffs,
    )


def _endpoint(text: str) -> str:
    return "Distant metastasis-free survival" if "metastasis" in text.lower() else text


def _metrics(performance: Performance) -> tuple[Metric, ...]:
    design = performance.design
    ibs_times = design.ibs_times_years
    wanted = (
        ("harrell_c", "Harrell C", ""),
        ("uno_c", "Uno C", f"tau = {design.uno_tau_years:.3g} years"),
        ("auc_5y", "AUC at 5 years", "cumulative/dynamic"),
        ("auc_10y", "AUC at 10 years", "cumulative/dynamic"),
        (
            "ibs",
            "Integrated Brier score",
            f"{min(ibs_times):g}-{max(ibs_times):g} years" if ibs_times else "",
        ),
        ("calibration_slope_10y", "Calibration slope", "at 10 years; 1 is ideal"),
    )
    out = []
    for key, name, note in wanted:
        m = performance.metric(key)
        if m is not None and m.mean is not None:
            out.append(Metric(name, m.mean, m.ci_lower, m.ci_upper, note))
    return tuple(out)


def risk_result(model: RiskModel, risk: PatientRisk) -> RiskResult:
    horizons = tuple(
        AbsoluteRisk(h.years, h.risk, h.ci_lower, h.ci_upper) for h in risk.horizons if h.risk is not None
    )
    lp = risk.linear_predictor
    return RiskResult(
        linear_predictor=lp,
        score=risk.score,
        group_names=tuple(n.capitalize() for n in model.group_names),
        group_index=risk.group_index,
        absolute_risks=horizons,
        linear_predictor_out_of_range=bool(lp < model.training_lp[0] or lp > model.training_lp[-1]),
    )


def signature_result(
    model: RiskModel,
    risk: PatientRisk,
    expression: dict[str, float],
    reliability: GeneReliability | None = None,
) -> SignatureResult:
    """The signature block; with the bundle's stored evaluation, each gene's cross-validated r and verdict."""
    table = {row.name: row for row in model.predictor_table}
    rows = []
    for gene in model.genes:
        z = float(risk.z_scores[gene])
        cv_r, reliable = reliability.of(gene) if reliability is not None else (None, None)
        rows.append(
            GeneRow(
                gene=gene,
                expression=float(expression[gene]),
                z_score=z,
                percentile=float(100.0 * 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))),
                hazard_ratio_per_sd=_hazard_ratio(table[gene]),
                in_calibration_range=gene not in risk.out_of_range,
                cv_r=cv_r,
                reliable=reliable,
            )
        )
    return SignatureResult(
        reliability=None if reliability is None else reliability_text(reliability),
        name=model.signature,
        expression_unit="model units",
        genes=tuple(rows),
        description=(
            f"{len(model.genes)} genes of the {model.signature} signature; z-scores against the calibration "
            "cohort's mean and SD; percentile assumes a normal distribution of each gene in that cohort."
        ),
    )


def reliability_text(reliability: GeneReliability) -> str:
    return (
        f"{reliability.rule} rule: cross-validated r ≥ 0.3 and BH q < 0.05, in the bundle's out-of-fold "
        f"evaluation over {reliability.n_units} {reliability.unit}s"
    )


def _hazard_ratio(row: PredictorRow) -> float:
    """The model's HR per SD of a gene; a separated fit's overflowing exp(beta) is capped to a float."""
    if row.hr_per_sd is not None:
        return row.hr_per_sd
    return math.exp(math.copysign(min(abs(row.coefficient_per_sd), MAX_LOG_HR), row.coefficient_per_sd))


def heatmap_genes(model: RiskModel, count: int) -> list[str]:
    """The signature genes with the largest absolute model coefficient (non-zero first)."""
    coefs = dict(zip(model.genes, model.coefficients[: len(model.genes)], strict=True))
    ranked = sorted(model.genes, key=lambda g: (-abs(coefs[g]), g))
    return ranked[:count]


def calibration_warning(model: RiskModel) -> QCWarning | None:
    """A warning unless the risk model says it was calibrated on slide-predicted expression."""
    source = model.expression_source
    if source is ExpressionSource.PREDICTED:
        return None
    what = "measured" if source is ExpressionSource.MEASURED else "an unstated kind of"
    return QCWarning(
        QCCode.RISK_MODEL_NOT_ON_PREDICTED,
        f"The risk model was calibrated on {what} expression, not on expression predicted from slides: its "
        "risks for this slide are not valid until it is re-calibrated on predicted expression "
        "(sequoia-clinic calibrate).",
    )


def tissue_area_mm2(prediction: Prediction) -> float:
    """The tissue area of the slide in mm² (tissue fraction x level-0 area)."""
    info = prediction.slide_info
    width, height = info.level_dimensions[0]
    return float(prediction.mask.tissue_fraction * width * height * info.mpp[0] * info.mpp[1] / 1e6)


def clinical_summary(
    model: RiskModel, risk: PatientRisk, inputs: ClinicalInputs, specimen: SpecimenType | None
) -> ClinicalSummary:
    """The clinical values given and the genomic / clinical parts of the linear predictor."""
    n_genes = len(model.genes)
    parts = [risk.z_scores[p] * b for p, b in zip(model.predictors, model.coefficients, strict=True)]
    population = model.population.eligibility_lines() if model.population is not None else ()
    return ClinicalSummary(
        given=inputs.given(),
        model_covariates=model.covariates,
        genomic_lp=float(sum(parts[:n_genes])),
        clinical_lp=float(sum(parts[n_genes:])),
        population=population,
        specimen_type=None if specimen is None else specimen.value,
    )


def repeatability_result(rep: Repeatability | None) -> RepeatabilityResult | None:
    if rep is None:
        return None
    return RepeatabilityResult(
        repeats=rep.repeats,
        score_low=rep.score_range[0],
        score_high=rep.score_range[1],
        lp_low=rep.lp_range[0],
        lp_high=rep.lp_range[1],
        fold_lp_low=rep.fold_lp_range[0],
        fold_lp_high=rep.fold_lp_range[1],
        same_group=rep.same_group,
        varied="tile sample and k-means seeds" if rep.tiles_resampled else "k-means seed",
        unstable=rep.unstable,
    )


def quality_control(prediction: Prediction, risk: PatientRisk, model: RiskModel) -> QualityControl:
    """Tissue and tile figures plus every QC warning, minus those the report words itself (by code)."""
    area_mm2 = tissue_area_mm2(prediction)
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
