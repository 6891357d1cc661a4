"""Cox model fitting: elastic-net path (scikit-survival Coxnet), penalty by cross-validated partial
likelihood, unpenalised fit, and the Breslow baseline survival.

Predictors are standardised before fitting (mean 0, SD 1 in the training data, population SD), so the
linear predictor lp = z . beta is centred on the training mean and the Breslow baseline S0(t) is the
survival of an average patient: S(t | x) = S0(t) ** exp(lp).

Why elastic net with a small L1 share (default l1_ratio 0.1): signature genes are many, correlated and
individually weak, and a cohort has few events (51 in GSE7390); a mostly-ridge penalty keeps correlated
genes together and shrinks hard, while the small L1 part lets clearly useless genes drop out. The
penalty is chosen by K-fold cross-validated partial likelihood (Verweij & van Houwelingen, Stat Med
1993; the default of glmnet's cv.glmnet for Cox), which is less noisy than a fold-wise C-index.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.linear_model.coxph import BreslowEstimator
from sksurv.util import Surv

from sequoia_clinic.errors import RiskModelError
from sequoia_clinic.survival.baseline import baseline_at


@dataclass(frozen=True)
class PenaltyOptions:
    """How the Cox model is penalised. ``alpha`` None = chosen by inner CV; 0 = unpenalised."""

    l1_ratio: float = 0.1
    alpha: float | None = None
    n_alphas: int = 40
    alpha_min_ratio: float = 0.01
    inner_folds: int = 5


@dataclass(frozen=True)
class CoxFit:
    """A fitted Cox model on standardised predictors, with its Breslow baseline survival."""

    coef: np.ndarray
    alpha: float
    baseline_times: np.ndarray
    baseline_survival: np.ndarray
    alpha_path: np.ndarray | None = None
    cv_partial_loglik: np.ndarray | None = None

    @property
    def last_time(self) -> float:
        """The longest follow-up of the training data: S0 is not estimable after it."""
        return float(self.baseline_times[-1])

    def survival_at(self, lp: np.ndarray, times: np.ndarray) -> np.ndarray:
        """S(t | lp) for each lp (rows) and time (columns); NaN after the last training time."""
        s0 = baseline_at(self.baseline_times, self.baseline_survival, times)
        with np.errstate(over="ignore"):  # exp(lp) overflows for a separated fit: s0 ** inf = 0
            return s0[None, :] ** np.exp(lp)[:, None]


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population SDs; a constant column cannot be standardised."""
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    if (sd <= 0).any():
        raise RiskModelError(
            f"{int((sd <= 0).sum())} predictor column(s) are constant in the training data",
            fix="Remove constant genes/covariates from the signature or table.",
        )
    return mean, sd


def breslow_baseline(lp: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breslow baseline survival (at lp = 0) on the distinct observed times, via scikit-survival."""
    with warnings.catch_warnings(), np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # exp(lp) overflows for a separated fit
        estimator = BreslowEstimator().fit(lp, event, time)
    return estimator.unique_times_.astype(float), estimator.baseline_survival_.y.astype(float)


def partial_log_likelihood(lp: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Cox partial log-likelihood with Breslow ties at given linear predictors.

    Hand-written because neither lifelines nor scikit-survival evaluates it at arbitrary coefficients,
    which the cross-validated partial likelihood needs.
    """
    order = np.argsort(-time, kind="mergesort")
    lp_sorted = lp[order]
    time_sorted = time[order]
    log_cum = np.logaddexp.accumulate(lp_sorted)
    # risk set of a time includes every tied patient: take the log-sum at the last tied position
    last_of_tie = np.searchsorted(-time_sorted, -time_sorted, side="right") - 1
    log_risk = log_cum[last_of_tie]
    mask = event[order].astype(bool)
    return float(np.sum(lp_sorted[mask] - log_risk[mask]))


def _coxnet(
    z: np.ndarray,
    y: np.ndarray,
    options: PenaltyOptions,
    alphas: np.ndarray | None,
    factor: np.ndarray | None,
):
    model = CoxnetSurvivalAnalysis(
        l1_ratio=options.l1_ratio,
        n_alphas=options.n_alphas,
        alphas=alphas,
        alpha_min_ratio=options.alpha_min_ratio,
        penalty_factor=factor,
        max_iter=100000,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            model.fit(z, y)
        except (ArithmeticError, AssertionError, ValueError, np.linalg.LinAlgError):
            # sksurv raises ArithmeticError or ValueError, or fails its finite-coefficient assert
            raise RiskModelError(
                "the penalised Cox fit diverged (weights too large)",
                fix="Use fewer genes, more events, or a larger penalty.",
            ) from None
    return model


def coxnet_path(
    z: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    options: PenaltyOptions,
    alphas: np.ndarray | None = None,
    factor: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Penalty path (decreasing alphas) and coefficients (predictors x alphas)."""
    model = _coxnet(z, Surv.from_arrays(event, time), options, alphas, factor)
    return np.asarray(model.alphas_, dtype=float), np.asarray(model.coef_, dtype=float)


def cv_partial_likelihood(
    z: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    alphas: np.ndarray,
    options: PenaltyOptions,
    seed: int,
    factor: np.ndarray | None = None,
) -> np.ndarray:
    """Verweij-van Houwelingen cross-validated partial log-likelihood for each alpha on the path."""
    folds = StratifiedKFold(n_splits=options.inner_folds, shuffle=True, random_state=seed)
    total = np.zeros(alphas.size)
    evaluated = np.zeros(alphas.size, dtype=int)
    for train, _ in folds.split(z, event):
        _, coefs = coxnet_path(z[train], time[train], event[train], options, alphas, factor)
        lp_all = z @ coefs
        lp_train = lp_all[train]
        for j in range(coefs.shape[1]):
            total[j] += partial_log_likelihood(lp_all[:, j], time, event) - partial_log_likelihood(
                lp_train[:, j], time[train], event[train]
            )
        evaluated[: coefs.shape[1]] += 1
    # A fold whose path stopped early leaves the smallest alphas with a sum over fewer folds, which is
    # less negative and would favour them: only alphas evaluated in every fold may be chosen.
    total[evaluated < options.inner_folds] = -np.inf
    return total


def _unpenalised(z: np.ndarray, time: np.ndarray, event: np.ndarray) -> np.ndarray:
    model = CoxPHSurvivalAnalysis(alpha=0.0, ties="breslow", n_iter=200, tol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.fit(z, Surv.from_arrays(event, time))
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            # e.g. "search direction contains NaN": more predictors than the events can support
            raise RiskModelError(
                f"the unpenalised Cox fit failed ({z.shape[1]} predictors, {int(np.sum(event))} events)",
                fix="Drop --penalty 0 so that the penalty is chosen by cross-validation, or use fewer genes.",
            ) from None
    coef = np.asarray(model.coef_, dtype=float)
    if not np.isfinite(coef).all():
        raise RiskModelError(
            "the unpenalised Cox fit gave non-finite coefficients",
            fix="Drop --penalty 0 so that the penalty is chosen by cross-validation, or use fewer genes.",
        )
    return coef


def fit_cox(
    z: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    options: PenaltyOptions,
    seed: int,
    factor: np.ndarray | None = None,
) -> CoxFit:
    """Fit on standardised predictors: unpenalised (alpha 0), fixed alpha, or alpha chosen by inner CV."""
    if options.alpha == 0:
        coef = _unpenalised(z, time, event)
        times, s0 = breslow_baseline(z @ coef, time, event)
        return CoxFit(coef, 0.0, times, s0)
    alphas, coefs = coxnet_path(z, time, event, options, None, factor)
    cv = None
    if options.alpha is None:
        cv = cv_partial_likelihood(z, time, event, alphas, options, seed, factor)
        best = int(np.argmax(cv))
        alpha, coef = float(alphas[best]), coefs[:, best]
    else:
        alpha = float(options.alpha)
        coef = fixed_alpha_coef(z, time, event, options, alphas, alpha, factor)
    times, s0 = breslow_baseline(z @ coef, time, event)
    return CoxFit(coef, alpha, times, s0, alphas, cv)


def fixed_alpha_coef(
    z: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    options: PenaltyOptions,
    path: np.ndarray,
    alpha: float,
    factor: np.ndarray | None = None,
) -> np.ndarray:
    """Coefficients at one alpha, reached along the path above it (warm starts keep Coxnet fast)."""
    alphas = np.append(path[path > alpha], alpha)
    _, coefs = coxnet_path(z, time, event, options, alphas, factor)
    # Coxnet (like glmnet) may stop the path early once the deviance no longer changes: the last
    # coefficients reached are then the solution at ``alpha`` to within that tolerance.
    return coefs[:, -1]
