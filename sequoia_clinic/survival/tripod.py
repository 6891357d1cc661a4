"""The TRIPOD+AI items a risk model file can answer, each labelled with its checklist number.

TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) is the 27-item reporting checklist for prediction models
that supersedes TRIPOD 2015. :func:`tripod_items` fills the items the tool knows from the model file
(outcome, horizon, predictors, n and events, missing data, splitting and tuning, internal validation with
CIs, recalibration, subgroup performance (``calibrate --subgroup``), the full model, thresholds, intended use, handling of poor
input, versions and hashes) and lists the others as "to be supplied by the user". The model card
(Markdown and the PDF's second page) and ``result.json`` (``model_card``) carry them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.records import SubgroupPerformance

TO_BE_SUPPLIED = "to be supplied by the user"
NOT_STATED = "not stated at calibration (calibrate --population FILE); " + TO_BE_SUPPLIED


@dataclass(frozen=True)
class TripodItem:
    """One checklist item: its number, topic and what the model says (or TO_BE_SUPPLIED)."""

    number: str
    topic: str
    text: str

    @property
    def supplied(self) -> bool:
        return TO_BE_SUPPLIED not in self.text

    def to_dict(self) -> dict[str, str]:
        return {"item": self.number, "topic": self.topic, "text": self.text}


def _metric(model: RiskModel, key: str, label: str) -> str | None:
    m = model.performance.metric(key)
    if m is None or m.mean is None:
        return None
    ci = (
        f" (95% CI {m.ci_lower:.3f}-{m.ci_upper:.3f})"
        if m.ci_lower is not None and m.ci_upper is not None
        else ""
    )
    return f"{label} {m.mean:.3f}{ci}"


def _performance(model: RiskModel) -> str:
    wanted = (
        ("harrell_c", "Harrell's C"),
        ("uno_c", "Uno's C"),
        ("auc_5y", "td-AUC 5 y"),
        ("auc_10y", "td-AUC 10 y"),
        ("ibs", "IBS"),
        ("calibration_slope_10y", "calibration slope 10 y"),
    )
    parts = [text for key, label in wanted if (text := _metric(model, key, label))]
    return "; ".join(parts) or "not computed"


def _subgroup_c(row: SubgroupPerformance) -> str:
    if row.harrell_c is None:
        return f"{row.level}: n={row.n}, {row.events} events, C n/a ({row.note})"
    ci = (
        f" (95% CI {row.ci_lower:.3f}-{row.ci_upper:.3f})"
        if row.ci_lower is not None and row.ci_upper is not None
        else ""
    )
    return f"{row.level}: n={row.n}, {row.events} events, C {row.harrell_c:.3f}{ci}"


def _subgroups(model: RiskModel) -> str:
    km = model.cross_validated_km
    groups = ", ".join(f"{g.label}: n={g.n}, {g.events} events" for g in km.groups)
    if model.subgroup_performance:
        rows = "; ".join(_subgroup_c(row) for row in model.subgroup_performance)
        return (
            f"cross-validated risk groups ({groups}); out-of-fold Harrell's C by declared subgroup (first CV "
            f"repeat, fold seed {model.performance.design.fold_seeds[0]}, bootstrap 95% CI): {rows}"
        )
    return (
        f"cross-validated risk groups ({groups}); performance by age band, site or other declared subgroups is "
        f"{TO_BE_SUPPLIED} (calibrate --subgroup COLUMN[:CUT], or stratify TABLE --group-col on the "
        "out-of-fold scores)"
    )


def tripod_items(model: RiskModel) -> tuple[TripodItem, ...]:
    """The TRIPOD+AI items of ``model``, in checklist order."""
    pop = model.population
    training, design, penalty = model.training, model.performance.design, model.penalty
    source = pop.data_source if pop and pop.data_source else f"cohort '{model.cohort}'; {NOT_STATED}"
    predictors = (
        f"{len(model.genes)} genes of signature '{model.signature}' (expression source: "
        f"{model.expression_source.value}; unit: as in the calibration table)"
        + (f"; clinical: {', '.join(spec.describe() for spec in model.clinical)}" if model.clinical else "")
        + (f"; covariates: {', '.join(model.covariates)}" if model.covariates and not model.clinical else "")
    )
    shrink = model.expression_shrinkage
    recalibration = (
        f"calibrated on {model.expression_source.value} expression"
        + (
            f"; predicted vs measured SD ratio median {shrink.median_sd_ratio:.2f} "
            f"({shrink.min_sd_ratio:.2f}-{shrink.max_sd_ratio:.2f}) over {shrink.n_genes} genes"
            if shrink is not None
            else ""
        )
        + "; slide-predicted expression needs a model calibrated with --expression-source predicted"
    )
    return (
        TripodItem("1-4", "Title, abstract, background, objectives", TO_BE_SUPPLIED),
        TripodItem("5a", "Data source", source),
        TripodItem(
            "5b",
            "Dates of accrual and end of follow-up",
            "; ".join(x for x in (pop.accrual, pop.follow_up_end) if x)
            if pop and (pop.accrual or pop.follow_up_end)
            else f"follow-up {training.follow_up_range_years[0]:.1f}-{training.follow_up_range_years[1]:.1f} y; "
            f"dates {TO_BE_SUPPLIED}",
        ),
        TripodItem("6a", "Setting", TO_BE_SUPPLIED),
        TripodItem(
            "6b",
            "Eligibility",
            (pop.eligibility or "; ".join(pop.eligibility_lines())) if pop else NOT_STATED,
        ),
        TripodItem("6c", "Treatments received", (pop.treatment or NOT_STATED) if pop else NOT_STATED),
        TripodItem(
            "7",
            "Data preparation and quality checks",
            "table checked at input (types, units, events); gene columns mapped through the HGNC alias table; "
            "slides: tissue mask, tile contrast check, adequacy minimums at scoring",
        ),
        TripodItem(
            "8",
            "Outcome and time horizon",
            f"{model.endpoint}; absolute risk at 5 and 10 years; times in years (source unit "
            f"{training.source_time_unit})",
        ),
        TripodItem("9", "Predictors", predictors),
        TripodItem(
            "10/21",
            "Sample size and events",
            f"n = {training.n}, {training.events} events; "
            + ", ".join(f"{h.events} by {h.years:g} y" for h in training.events_by_horizon),
        ),
        TripodItem("11", "Missing data", training.missing_data),
        TripodItem(
            "12",
            "Analysis: splitting, model, tuning, internal validation",
            f"{penalty.method}; penalty chosen by {penalty.chosen_by}; {design.outer_folds}-fold CV x "
            f"{design.repeats} repeats (fold seeds {design.fold_seeds[0]}-{design.fold_seeds[-1]}, stratified by "
            f"event), penalty re-chosen in each training fold: {design.penalty_rechosen_in_each_training_fold}; "
            f"{design.n_bootstrap} bootstrap resamples for CIs",
        ),
        TripodItem("12 (updating)", "Recalibration", recalibration),
        TripodItem("14", "Fairness: performance in subgroups", _subgroups(model)),
        TripodItem(
            "15",
            "Model output and thresholds",
            f"linear predictor, 0-100 score (percentile in the calibration cohort), absolute risk at 5/10 y "
            f"with bootstrap CI; groups {', '.join(model.group_names)} by {model.groups.description}",
        ),
        TripodItem(
            "16",
            "Differences between development and evaluation data",
            "the model is developed on "
            f"{model.expression_source.value} expression; scoring applies it to slide-predicted expression "
            f"(flagged unless calibrated on predicted); population and specimen differences are flagged per "
            f"patient",
        ),
        TripodItem("17", "Patient and public involvement", TO_BE_SUPPLIED),
        TripodItem(
            "18", "Open science: code, version", f"{model.created_by}; model file with every coefficient"
        ),
        TripodItem(
            "22",
            "Full model specification",
            f"{model.model_form}; coefficients, means, SDs and Breslow S0(t) in the model file; S0(5 y) = "
            f"{_fmt(model.baseline_survival_at(5.0))}, S0(10 y) = {_fmt(model.baseline_survival_at(10.0))}",
        ),
        TripodItem("23", "Performance with CIs (internal validation)", _performance(model)),
        TripodItem(
            "27a",
            "Handling of poor-quality or unavailable input",
            "refused: missing covariates, unreadable or inadequate slides (tissue / tile minimums, unless "
            "--allow-inadequate, then flagged); flagged: values outside the calibration range, patients outside "
            "the population, specimen types not developed on, unstable risk group over repeats",
        ),
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def tripod_markdown(model: RiskModel) -> list[str]:
    """The items as a Markdown table (lines)."""
    lines = [
        "## TRIPOD+AI items",
        "",
        "Item numbers per TRIPOD+AI (Collins et al., BMJ 2024;385:e078378).",
        "",
        "| item | topic | this model |",
        "|---|---|---|",
    ]
    lines += [f"| {i.number} | {i.topic} | {i.text.replace('|', '/')} |" for i in tripod_items(model)]
    return lines
