"""Calibrating a risk model on a cohort: penalised Cox fit, honest cross-validated performance, frozen
risk groups, bootstrap refits for absolute-risk intervals, and the audit sections of the model file.

Honesty rules: the penalty is re-chosen inside every training fold (nested CV), every out-of-fold
linear predictor is centred on its own fold's training mean (standardisation is fitted per fold), and
cross-validated risk groups use cut-offs derived from the fold's training data only. Performance is
reported as the mean over repeated CV with different fold seeds, with the spread over repeats and a
bootstrap 95% CI. Everything is seeded and deterministic.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import proportional_hazard_test
from sklearn.model_selection import StratifiedKFold
from sksurv.nonparametric import kaplan_meier_estimator

from sequoia_clinic import __version__
from sequoia_clinic.errors import OptionError, RiskModelError, TableError
from sequoia_clinic.settings import RiskSettings
from sequoia_clinic.signatures.registry import Signature
from sequoia_clinic.survival import cohort as cohort_io
from sequoia_clinic.survival.baseline import baseline_at
from sequoia_clinic.survival.clinical import CovariateSpec, MissingRule, encode_covariates, parse_covariates
from sequoia_clinic.survival.cox import (
    CoxFit,
    PenaltyOptions,
    _unpenalised,
    breslow_baseline,
    fit_cox,
    fixed_alpha_coef,
    standardisation,
)
from sequoia_clinic.survival.cutoffs import CutoffSpec, assign_groups, resolve_cutoffs
from sequoia_clinic.survival.km import (
    display_limit,
    hazard_ratios_vs_reference,
    km_summary,
    logrank,
    pairwise_logrank,
    tick_times,
)
from sequoia_clinic.survival.metrics import MetricPlan, OutOfFold, summarise
from sequoia_clinic.survival.model import RISK_HORIZONS, RiskModel
from sequoia_clinic.survival.population import Population
from sequoia_clinic.survival.records import (
    BootstrapFit,
    CalibrationBin,
    CalibrationCurve,
    CrossValidatedKM,
    CVDesign,
    ExpressionShrinkage,
    ExpressionSource,
    GroupRule,
    HorizonCount,
    KMPoint,
    PenaltyChoice,
    Performance,
    PHCheck,
    PredictorKind,
    PredictorRow,
    SignatureSummary,
    TrainingSummary,
    finite_or_none,
)
from sequoia_clinic.survival.subgroups import (
    BOOTSTRAP_MAX,
    SubgroupSpec,
    subgroup_levels,
    subgroup_performance,
)

LARGE_COEFFICIENT = 10.0  # |beta| per SD above this means separation or a fit that did not converge
# the lifelines/numpy failures of auxiliary fits (PH check, univariable HRs): recorded as null + a note
FIT_FAILURES = (ValueError, ArithmeticError, np.linalg.LinAlgError)


@dataclass(frozen=True)
class CohortMatrix:
    """Validated predictors (raw values, genes then covariates) and survival of a calibration cohort."""

    values: np.ndarray
    genes: tuple[str, ...]
    covariates: tuple[str, ...]  # predictor names of the clinical covariates (encoded)
    survival: cohort_io.SurvivalData
    clinical: tuple[CovariateSpec, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()  # table columns read under their current symbol
    missing_data: str = "none: rows with missing values are rejected at input"

    @property
    def predictors(self) -> tuple[str, ...]:
        return self.genes + self.covariates


def cohort_matrix(
    frame: pd.DataFrame,
    signature: Signature,
    time_col: str,
    event_col: str,
    time_unit: str,
    covariates: Sequence[str] = (),
    path: Path | None = None,
    min_events: int = 10,
    missing: MissingRule = MissingRule.REFUSE,
) -> CohortMatrix:
    """Check the table (columns, types, NaNs, events, unit) and extract the model's predictors.

    ``covariates`` are declarations ``NAME[:KIND[:REFERENCE]]`` (survival/clinical.py), encoded as predictors.
    """
    survival = cohort_io.survival_data(frame, time_col, event_col, time_unit, path, min_events)
    declared = parse_covariates(",".join(covariates))
    cohort_io.require_columns(frame, [c for c, _, _ in declared], path, what="covariate column")
    match = cohort_io.match_genes(frame, signature.genes, path)
    genes = cohort_io.numeric_block(frame, [match.columns[g] for g in signature.genes], path, "gene column")
    encoded = encode_covariates(frame, declared, missing, path)
    return CohortMatrix(
        np.hstack([genes, encoded.values]),
        tuple(signature.genes),
        encoded.names,
        survival,
        encoded.specs,
        match.renamed,
        encoded.missing_summary(),
    )


def _options(settings: RiskSettings) -> PenaltyOptions:
    return PenaltyOptions(
        l1_ratio=settings.l1_ratio,
        alpha=settings.penalty,
        n_alphas=settings.n_alphas,
        alpha_min_ratio=settings.alpha_min_ratio,
        inner_folds=settings.inner_folds,
    )


def metric_plan(
    time: np.ndarray, event: np.ndarray, settings: RiskSettings, path: Path | None = None
) -> MetricPlan:
    """Horizons the cohort can support: before the display limit and with at least one earlier event."""
    limit = min(display_limit(time), float(time.max()) * 0.999)

    def usable(h: float) -> bool:
        return h < limit and bool(((time <= h) & event).any())

    upper = min(10.0, limit)
    lower = max(upper / 10.0, float(time.min()) + 1e-6)
    if not upper > lower:
        raise TableError(
            f"too little follow-up to evaluate a model: fewer than 10% of patients (or 10) are followed "
            f"beyond {limit:.2g} years",
            path,
            "Check the time column and its unit; a cohort needs follow-up beyond its first few events.",
        )
    return MetricPlan(
        horizons=tuple(h for h in settings.auc_horizons_years if usable(h)),
        calibration_horizons=tuple(h for h in settings.calibration_horizons_years if usable(h)),
        ibs_times=tuple(float(t) for t in np.linspace(lower, upper, 19)),
        tau=upper,
    )


def _s0_at(fit: CoxFit, horizons: Sequence[float]) -> dict[float, float | None]:
    """S0 at each horizon; None (not estimable) after the last follow-up time of the fit's data."""
    values = baseline_at(fit.baseline_times, fit.baseline_survival, np.asarray(horizons, dtype=float))
    return {float(h): float(v) if np.isfinite(v) else None for h, v in zip(horizons, values, strict=True)}


def cv_repeat(
    x: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    options: PenaltyOptions,
    spec: CutoffSpec,
    folds: int,
    seed: int,
    grid: np.ndarray,
    factor: np.ndarray | None = None,
) -> OutOfFold:
    """One repeat of K-fold CV: out-of-fold lp, survival on ``grid``, KM null model and risk group."""
    n = time.size
    lp, groups = np.zeros(n), np.zeros(n, dtype=int)
    surv, null = np.ones((n, grid.size)), np.ones((n, grid.size))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(splitter.split(x, event)):
        mean, sd = standardisation(x[train])
        z_train, z_test = (x[train] - mean) / sd, (x[test] - mean) / sd
        fit = fit_cox(z_train, time[train], event[train], options, seed=seed * 100 + k, factor=factor)
        lp[test] = z_test @ fit.coef
        surv[test] = fit.survival_at(lp[test], grid)
        km_times, km_surv = kaplan_meier_estimator(event[train], time[train])
        null[test] = baseline_at(km_times, km_surv, grid)[None, :]
        cut = resolve_cutoffs(spec, z_train @ fit.coef, _s0_at(fit, RISK_HORIZONS))
        groups[test] = assign_groups(lp[test], cut)
    return OutOfFold(lp=lp, survival=surv, null_survival=null, groups=groups, grid=grid)


def _bootstrap_fits(
    z: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    fit: CoxFit,
    options: PenaltyOptions,
    n_boot: int,
    seed: int,
    factor: np.ndarray | None,
) -> tuple[np.ndarray, tuple[tuple[float, tuple[float | None, ...]], ...]]:
    """Refits on bootstrap resamples at the chosen penalty: coefficients and S0 at the risk horizons.

    S0 is None (saved as null) in a resample whose longest follow-up ends before the horizon.
    """
    rng = np.random.default_rng(seed)
    coefs: list[np.ndarray] = []
    s0: dict[float, list[float | None]] = {h: [] for h in RISK_HORIZONS}
    for _ in range(n_boot):
        index = rng.integers(0, time.size, time.size)
        zb, tb, eb = z[index], time[index], event[index]
        if fit.alpha == 0 or fit.alpha_path is None:  # no path: the fit was unpenalised
            coef = _unpenalised(zb, tb, eb)
        else:
            coef = fixed_alpha_coef(zb, tb, eb, options, fit.alpha_path, fit.alpha, factor)
        times, surv = breslow_baseline(zb @ coef, tb, eb)
        coefs.append(coef)
        for h in RISK_HORIZONS:
            s0[h].append(finite_or_none(baseline_at(times, surv, np.array([h]))[0]))
    return np.asarray(coefs).reshape(n_boot, z.shape[1]), tuple((h, tuple(v)) for h, v in s0.items())


@dataclass(frozen=True)
class Univariable:
    """Unpenalised HR per SD of one predictor with its Wald 95% CI; None (with a note) if the fit failed."""

    hr_per_sd: float | None
    ci: tuple[float | None, float | None]
    p: float | None
    note: str | None = None


def _univariable(values: np.ndarray, time: np.ndarray, event: np.ndarray) -> Univariable:
    """Unpenalised HR per SD of one predictor with its Wald 95% CI (lifelines); None if it fails."""
    frame = pd.DataFrame(
        {"x": (values - values.mean()) / values.std(), "time": time, "event": event.astype(int)}
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = CoxPHFitter().fit(frame, "time", "event").summary.loc["x"]
    except FIT_FAILURES:
        return Univariable(
            None, (None, None), None, "not estimable: the univariable Cox fit did not converge"
        )
    return Univariable(
        hr_per_sd=finite_or_none(row["exp(coef)"]),
        ci=(finite_or_none(row["exp(coef) lower 95%"]), finite_or_none(row["exp(coef) upper 95%"])),
        p=finite_or_none(row["p"]),
    )


def _predictor_table(data: CohortMatrix, mean, sd, coef, boot_coefs) -> tuple[PredictorRow, ...]:
    with np.errstate(over="ignore"):  # HR = exp(beta) is infinite for a separated fit (saved as null)
        return _predictor_rows(data, mean, sd, coef, boot_coefs)


def _predictor_rows(data: CohortMatrix, mean, sd, coef, boot_coefs) -> tuple[PredictorRow, ...]:
    rows = []
    time, event = data.survival.time, data.survival.event
    for j, name in enumerate(data.predictors):
        boot_hr = np.exp(boot_coefs[:, j]) if boot_coefs.size else np.array([np.nan])
        univariable = _univariable(data.values[:, j], time, event)
        rows.append(
            PredictorRow(
                name=name,
                kind=PredictorKind.GENE if j < len(data.genes) else PredictorKind.COVARIATE,
                mean=float(mean[j]),
                sd=float(sd[j]),
                coefficient_per_sd=float(coef[j]),
                hr_per_sd=finite_or_none(np.exp(coef[j])),
                hr_per_sd_bootstrap_ci=(
                    finite_or_none(np.percentile(boot_hr, 2.5)),
                    finite_or_none(np.percentile(boot_hr, 97.5)),
                ),
                train_min=float(data.values[:, j].min()),
                train_max=float(data.values[:, j].max()),
                univariable_hr_per_sd=univariable.hr_per_sd,
                univariable_ci=univariable.ci,
                univariable_p=univariable.p,
                univariable_note=univariable.note,
            )
        )
    return tuple(rows)


PH_METHOD = (
    "Schoenfeld-residual test of the apparent linear predictor against rank(time) "
    "(lifelines proportional_hazard_test)"
)


def _ph_check(lp: np.ndarray, time: np.ndarray, event: np.ndarray) -> PHCheck:
    frame = pd.DataFrame({"lp": lp, "time": time, "event": event.astype(int)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cph = CoxPHFitter().fit(frame, "time", "event")
            result = proportional_hazard_test(cph, frame, time_transform="rank")
        p_value = float(np.asarray(result.p_value).ravel()[0])
    except FIT_FAILURES:
        return PHCheck(
            method=PH_METHOD,
            test_statistic=None,
            p_value=None,
            apparent_hr_per_unit_lp=None,
            interpretation="not estimable: the Cox fit of the linear predictor did not converge",
        )
    return PHCheck(
        method=PH_METHOD,
        test_statistic=finite_or_none(np.asarray(result.test_statistic).ravel()[0]),
        p_value=finite_or_none(p_value),
        apparent_hr_per_unit_lp=finite_or_none(np.exp(cph.params_["lp"])),
        interpretation="p < 0.05: the effect of the score changes over follow-up (non-proportional hazards)"
        if p_value < 0.05
        else "no evidence against proportional hazards at the 5% level",
    )


def _training_summary(
    time: np.ndarray,
    event: np.ndarray,
    unit: str,
    horizons: Sequence[float],
    cohort: str,
    missing_data: str = "none: rows with missing values are rejected at input",
) -> TrainingSummary:
    reverse = KaplanMeierFitter().fit(time, ~event)
    overall = KaplanMeierFitter().fit(time, event)
    km_rows = []
    for h in horizons:
        if h <= time.max():
            ci = overall.confidence_interval_survival_function_
            i = int(np.searchsorted(overall.timeline, h, side="right") - 1)
            km_rows.append(
                KMPoint(
                    time=h,
                    survival=float(overall.survival_function_.iloc[i, 0]),
                    lower=float(ci.iloc[i, 0]),
                    upper=float(ci.iloc[i, 1]),
                )
            )
    return TrainingSummary(
        n=int(time.size),
        events=int(event.sum()),
        event_fraction=float(event.mean()),
        median_follow_up_years=finite_or_none(reverse.median_survival_time_),
        median_follow_up_method="reverse Kaplan-Meier",
        follow_up_range_years=(float(time.min()), float(time.max())),
        events_by_horizon=tuple(HorizonCount(h, int(((time <= h) & event).sum())) for h in horizons),
        km_survival=tuple(km_rows),
        source_time_unit=unit,
        missing_data=missing_data,
        cohort=cohort,
    )


def _calibration_table(
    time: np.ndarray, event: np.ndarray, oof: OutOfFold, horizon: float, bins: int
) -> CalibrationCurve:
    """Out-of-fold predicted vs Kaplan-Meier observed risk at ``horizon`` in predicted-risk quantile bins."""
    column = int(np.flatnonzero(np.isclose(oof.grid, horizon))[0])
    risk = 1.0 - oof.survival[:, column]
    labels = pd.qcut(risk, q=bins, labels=False, duplicates="drop")
    rows = []
    for b in sorted(set(labels)):
        mask = labels == b
        fitter = KaplanMeierFitter().fit(time[mask], event[mask])
        ci = fitter.confidence_interval_survival_function_
        i = int(np.searchsorted(fitter.timeline, horizon, side="right") - 1)
        surv = float(fitter.survival_function_.iloc[i, 0]) if i >= 0 else 1.0
        rows.append(
            CalibrationBin(
                bin=int(b) + 1,
                n=int(mask.sum()),
                events_by_horizon=int(((time <= horizon) & event & mask).sum()),
                predicted=float(risk[mask].mean()),
                observed=1.0 - surv,
                observed_lower=1.0 - float(ci.iloc[i, 1]) if i >= 0 else 0.0,
                observed_upper=1.0 - float(ci.iloc[i, 0]) if i >= 0 else 0.0,
            )
        )
    return CalibrationCurve(horizon, tuple(rows))


def _cv_km(
    time, event, oof: OutOfFold, names: Sequence[str], horizons, seed: int, spec: CutoffSpec
) -> CrossValidatedKM:
    limit = display_limit(time)
    ticks = tick_times(limit)
    labels = np.array([names[g] for g in oof.groups])
    present = [n for n in names if (labels == n).any()]
    if len(present) < len(names):
        # a report draws one cross-validated curve per group: a model without one cannot be used
        empty = next(n for n in names if n not in present)
        raise OptionError(
            f"risk group '{empty}' gets no patients in cross-validation "
            f"(counts {', '.join(str(int((labels == n).sum())) for n in names)})",
            fix="Use fewer groups or cut-offs that leave more patients in each group; if --penalty 0 was "
            "given, let the penalty be chosen by cross-validation.",
        )
    return CrossValidatedKM(
        description=(
            f"cross-validated groups (fold seed {seed}): each patient's group comes from a model fitted "
            f"without them, with cut-offs ({spec.describe()}) computed in that fold's training data"
        ),
        display_limit_years=limit,
        groups=tuple(km_summary(time[labels == n], event[labels == n], n, ticks, horizons) for n in present),
        logrank=logrank(time, event, labels) if len(present) > 1 else None,
        pairwise_logrank=pairwise_logrank(time, event, labels) if len(present) > 1 else (),
        hazard_ratios_vs_lowest=hazard_ratios_vs_reference(time, event, labels, present),
        note="standard log-rank p on cross-validated groups (no permutation test)",
    )


def fit_risk_model(
    frame: pd.DataFrame,
    signature: Signature,
    *,
    time_col: str,
    event_col: str,
    time_unit: str,
    covariates: Sequence[str] = (),
    cutoffs: CutoffSpec | None = None,
    settings: RiskSettings | None = None,
    endpoint: str = "event",
    cohort_name: str = "calibration cohort",
    notes: Sequence[str] = (),
    path: Path | None = None,
    expression_source: ExpressionSource = ExpressionSource.UNKNOWN,
    missing: MissingRule = MissingRule.REFUSE,
    population: Population | None = None,
    shrinkage: ExpressionShrinkage | None = None,
    subgroups: Sequence[SubgroupSpec] = (),
) -> RiskModel:
    """Calibrate a Cox risk model of ``signature``'s genes (and typed clinical covariates) on a cohort table.

    ``covariates`` declare clinical columns as ``NAME[:KIND[:REFERENCE]]`` (survival/clinical.py); they are
    unpenalised. ``missing`` is the stated rule for missing clinical values. ``subgroups`` (survival/
    subgroups.py) get Harrell's C of the first CV repeat's out-of-fold linear predictor per level.
    """
    settings = settings or RiskSettings()
    spec = cutoffs or CutoffSpec("tertiles")
    data = cohort_matrix(
        frame, signature, time_col, event_col, time_unit, covariates, path, settings.min_events, missing
    )
    levels = subgroup_levels(frame, subgroups, path)  # checked before the (slow) fit
    renamed = cohort_io.renamed_note(data.renamed)
    time, event = data.survival.time, data.survival.event
    options = _options(settings)
    factor = np.r_[np.ones(len(data.genes)), np.zeros(len(data.covariates))] if data.covariates else None

    mean, sd = standardisation(data.values)
    z = (data.values - mean) / sd
    final = fit_cox(z, time, event, options, seed=settings.seed, factor=factor)
    lp = z @ final.coef
    cut = resolve_cutoffs(spec, lp, _s0_at(final, RISK_HORIZONS))
    names = spec.group_names()
    counts = np.bincount(assign_groups(lp, cut), minlength=len(names))
    check_groups(lp, counts, names)
    fit_warnings = coefficient_warnings(final.coef, data.predictors)

    plan = metric_plan(time, event, settings, path)
    grid = np.unique(np.r_[plan.ibs_times, plan.horizons, plan.calibration_horizons, RISK_HORIZONS])
    repeats = [
        cv_repeat(
            data.values, time, event, options, spec, settings.outer_folds, settings.seed + r, grid, factor
        )
        for r in range(settings.cv_repeats)
    ]
    performance = summarise(time, event, repeats, plan, settings.n_bootstrap_metrics, settings.seed)
    boot_coefs, boot_s0 = _bootstrap_fits(
        z, time, event, final, options, settings.n_bootstrap_fit, settings.seed + 1, factor
    )

    return RiskModel(
        signature=signature.name,
        genes=data.genes,
        covariates=data.covariates,
        means=tuple(map(float, mean)),
        sds=tuple(map(float, sd)),
        coefficients=tuple(map(float, final.coef)),
        train_min=tuple(map(float, data.values.min(axis=0))),
        train_max=tuple(map(float, data.values.max(axis=0))),
        baseline_times=tuple(map(float, final.baseline_times)),
        baseline_survival=tuple(map(float, final.baseline_survival)),
        groups=GroupRule(
            method=spec.method,
            scale=spec.scale,
            user_values=tuple(spec.values),
            description=spec.describe(),
            training_counts=tuple(int(c) for c in counts),
            cutoffs=tuple(map(float, cut)),
            names=tuple(names),
        ),
        training_lp=tuple(map(float, np.sort(lp))),
        bootstrap=BootstrapFit(
            n=settings.n_bootstrap_fit,
            seed=settings.seed + 1,
            method="refits on patient resamples at the chosen penalty (standardisation fixed); "
            "risk CI = normal interval on the log(-log) scale with the bootstrap SD",
            coefficients=tuple(tuple(map(float, row)) for row in boot_coefs),
            baseline_at=boot_s0,
        ),
        max_follow_up=float(time.max()),
        created_by=f"sequoia-clinic {__version__}",
        signature_details=_signature_summary(signature),
        endpoint=endpoint,
        cohort=cohort_name,
        expression_source=expression_source,
        model_form="S(t|x) = S0(t) ** exp(lp), lp = sum_j beta_j (x_j - mean_j) / sd_j",
        penalty=_penalty_choice(final, settings),
        training=_training_summary(
            time, event, time_unit, settings.auc_horizons_years, cohort_name, data.missing_data
        ),
        performance=Performance(performance, _cv_design(settings, plan)),
        ph_check=_ph_check(lp, time, event),
        cross_validated_km=_cv_km(
            time, event, repeats[0], names, settings.auc_horizons_years, settings.seed, spec
        ),
        calibration_plot=tuple(
            _calibration_table(time, event, repeats[0], h, settings.calibration_bins)
            for h in plan.calibration_horizons
        ),
        predictor_table=_predictor_table(data, mean, sd, final.coef, boot_coefs),
        settings=settings,
        fit_warnings=tuple(fit_warnings),
        notes=(*notes, *fit_warnings, *([renamed] if renamed else [])),
        clinical=data.clinical,
        population=population,
        expression_shrinkage=shrinkage,
        subgroup_performance=subgroup_performance(
            levels,
            time,
            event,
            repeats[0].lp,
            min(settings.n_bootstrap_metrics, BOOTSTRAP_MAX),
            settings.seed,
        ),
    )


def _signature_summary(signature: Signature) -> SignatureSummary:
    return SignatureSummary(
        name=signature.name,
        genes=tuple(signature.genes),
        weights=None if signature.weights is None else tuple(map(float, signature.weights)),
        unmapped=tuple(signature.unmapped),
        renamed=tuple((a, b) for a, b in signature.renamed),
        groups=None if signature.groups is None else tuple(signature.groups),
        formula=signature.formula,
        citation=signature.citation,
        description=signature.description,
        source=signature.source,
    )


def _penalty_choice(final: CoxFit, settings: RiskSettings) -> PenaltyChoice:
    return PenaltyChoice(
        method="elastic-net Cox (scikit-survival CoxnetSurvivalAnalysis, Breslow ties)"
        if final.alpha > 0
        else "unpenalised Cox (scikit-survival CoxPHSurvivalAnalysis, Breslow ties)",
        alpha=final.alpha,
        l1_ratio=settings.l1_ratio,
        chosen_by="fixed by the user"
        if settings.penalty is not None
        else f"{settings.inner_folds}-fold cross-validated partial likelihood (Verweij-van Houwelingen) on the training data",
        alpha_path=None if final.alpha_path is None else tuple(map(float, final.alpha_path)),
        cv_partial_loglik=None
        if final.cv_partial_loglik is None
        else tuple(finite_or_none(v) for v in final.cv_partial_loglik),
        covariates_penalised=False,
        nonzero_coefficients=int(np.sum(np.abs(final.coef) > 0)),
    )


def _cv_design(settings: RiskSettings, plan: MetricPlan) -> CVDesign:
    return CVDesign(
        outer_folds=settings.outer_folds,
        repeats=settings.cv_repeats,
        fold_seeds=tuple(settings.seed + r for r in range(settings.cv_repeats)),
        stratified_by_event=True,
        penalty_rechosen_in_each_training_fold=settings.penalty is None,
        inner_folds=settings.inner_folds,
        n_bootstrap=settings.n_bootstrap_metrics,
        bootstrap="percentile CI over patients; resamples cycle through the CV repeats' out-of-fold predictions",
        auc_horizons_years=tuple(plan.horizons),
        calibration_horizons_years=tuple(plan.calibration_horizons),
        ibs_times_years=tuple(plan.ibs_times),
        uno_tau_years=plan.tau,
        ipcw_censoring="Kaplan-Meier of the censoring times of the whole cohort",
        calibration_slope="Cox coefficient of out-of-fold log(-log S(t|x)), follow-up censored at t; 1 is ideal",
        calibration_in_the_large="mean out-of-fold predicted risk at t minus Kaplan-Meier risk at t",
    )


def check_groups(lp: np.ndarray, counts: np.ndarray, names: Sequence[str]) -> None:
    """Every risk group must hold training patients (a report draws one curve per group)."""
    if np.ptp(lp) == 0:
        raise RiskModelError(
            "every coefficient was shrunk to zero: the genes show no prognostic signal in this cohort, "
            "so no risk groups can be formed",
            fix="Check the event coding and the endpoint, or use a cohort with more events.",
        )
    empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
    if empty:
        raise OptionError(
            f"the cut-offs leave risk group '{empty[0]}' empty in the training data "
            f"(counts {', '.join(str(int(c)) for c in counts)}; linear predictor range "
            f"{lp.min():.3g} to {lp.max():.3g})",
            fix="Choose cut-offs (or a split into fewer groups) that leave patients in every group.",
        )


def coefficient_warnings(coef: np.ndarray, predictors: Sequence[str]) -> list[str]:
    """A warning when a coefficient per SD is implausibly large (separation or non-convergence)."""
    large = np.abs(coef) > LARGE_COEFFICIENT
    if not large.any():
        return []
    worst = int(np.argmax(np.abs(coef)))
    return [
        f"{int(large.sum())} coefficient(s) exceed {LARGE_COEFFICIENT:g} per SD in absolute value "
        f"(largest {coef[worst]:.3g} for {predictors[worst]}): the fit separated the data or did not "
        "converge, so risks from this model are unreliable; use a penalty (drop --penalty 0) or more events"
    ]
