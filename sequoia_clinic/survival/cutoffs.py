"""Risk-group cut-offs: user-given (on the linear-predictor, score or absolute-risk scale) or fixed from
the training distribution (tertiles, median, quartiles) at calibration time, then frozen in the model.

Cut-offs are always stored on the linear-predictor (lp) scale, where group k holds lp in
[cutoff[k-1], cutoff[k]). Data-driven splits (tertiles etc.) are sample-dependent: they are fine for
exploratory plots and are labelled as such; pre-specified cut-offs should come from a stated source.
Minimum-p "optimal" cut-points are deliberately not offered (they inflate effect sizes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sequoia_clinic.errors import OptionError

QUANTILE_METHODS = {"tertiles": (1 / 3, 2 / 3), "median": (0.5,), "quartiles": (0.25, 0.5, 0.75)}
SCALES = ("lp", "score", "risk5", "risk10")
DEFAULT_NAMES = {
    2: ("low", "high"),
    3: ("low", "intermediate", "high"),
    4: ("low", "low-intermediate", "high-intermediate", "high"),
}


@dataclass(frozen=True)
class CutoffSpec:
    """How the cut-offs are chosen: ``method`` 'user' (with ``values`` on ``scale``) or a quantile split."""

    method: str = "tertiles"
    values: tuple[float, ...] = ()
    scale: str = "lp"
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.method != "user" and self.method not in QUANTILE_METHODS:
            raise OptionError(
                f"unknown grouping '{self.method}'",
                fix=f"Use {', '.join(QUANTILE_METHODS)}, or give cut-offs.",
                option="groups",
            )
        if self.scale not in SCALES:
            raise OptionError(
                f"unknown cut-off scale '{self.scale}'",
                fix=f"Use one of {', '.join(SCALES)}.",
                option="cutoff_scale",
            )
        if self.method == "user":
            if not self.values:
                raise OptionError(
                    "no cut-off values given", fix="Pass increasing numbers a,b.", option="cutoffs"
                )
            if any(not np.isfinite(v) for v in self.values) or list(self.values) != sorted(set(self.values)):
                raise OptionError(
                    "cut-offs must be finite and strictly increasing",
                    fix="Pass a,b with a < b.",
                    option="cutoffs",
                )
            if self.scale == "score" and not all(0 < v < 100 for v in self.values):
                raise OptionError(
                    "score cut-offs must lie strictly between 0 and 100",
                    fix="Pass percentiles, e.g. 33,67.",
                    option="cutoffs",
                )
            if self.scale.startswith("risk") and not all(0 < v < 1 for v in self.values):
                raise OptionError(
                    "absolute-risk cut-offs must lie strictly between 0 and 1",
                    fix="Pass e.g. 0.1,0.2.",
                    option="cutoffs",
                )
        if self.names is not None and len(self.names) != self.n_groups:
            raise OptionError(
                f"{len(self.names)} group names for {self.n_groups} groups",
                fix="Give one name per group.",
                option="group_names",
            )

    @property
    def n_groups(self) -> int:
        return (len(self.values) if self.method == "user" else len(QUANTILE_METHODS[self.method])) + 1

    def group_names(self) -> tuple[str, ...]:
        if self.names is not None:
            return self.names
        return DEFAULT_NAMES.get(self.n_groups, tuple(f"group {i + 1}" for i in range(self.n_groups)))

    def describe(self) -> str:
        if self.method == "user":
            return f"pre-specified by the user on the {self.scale} scale: {', '.join(f'{v:g}' for v in self.values)}"
        return (
            f"{self.method} of the training linear predictor (data-driven, fixed at calibration; exploratory)"
        )


def parse_names(text: str | None) -> tuple[str, ...]:
    """A comma-separated list of names (``"a, b"`` -> ``("a", "b")``); empty or None gives ()."""
    return tuple(v.strip() for v in text.split(",") if v.strip()) if text else ()


def parse_numbers(text: str | None, option: str) -> tuple[float, ...]:
    """A comma-separated list of numbers; an OptionError naming ``option`` if one is not a number."""
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OptionError(
            f"'{text}' is not a comma-separated list of numbers", fix="Pass e.g. 0.2,0.5.", option=option
        ) from None


def parse_cutoff_spec(
    cutoffs: str | None, groups: str | None, scale: str = "lp", names: str | None = None
) -> CutoffSpec:
    """The spec from its text form: ``cutoffs`` (e.g. ``"0.2,0.5"``, on ``scale``) or a quantile split
    ``groups`` (tertiles, median, quartiles), with optional comma-separated group ``names``; tertiles when
    neither is given."""
    if cutoffs and groups:
        raise OptionError(
            "cut-offs and a quantile split (groups) are exclusive", fix="Pass one of them.", option="cutoffs"
        )
    group_names = parse_names(names) or None
    if cutoffs:
        return CutoffSpec("user", parse_numbers(cutoffs, "cutoffs"), scale, group_names)
    return CutoffSpec(groups or "tertiles", (), "lp", group_names)


def resolve_cutoffs(
    spec: CutoffSpec, lp_train: np.ndarray, s0_at: Mapping[float, float | None]
) -> tuple[float, ...]:
    """Cut-offs on the lp scale. ``s0_at`` gives the baseline survival at 5 and 10 years (for risk scales)."""
    if spec.method != "user":
        return tuple(float(np.quantile(lp_train, q)) for q in QUANTILE_METHODS[spec.method])
    if spec.scale == "lp":
        return spec.values
    if spec.scale == "score":
        return tuple(float(np.percentile(lp_train, v)) for v in spec.values)
    horizon = 5.0 if spec.scale == "risk5" else 10.0
    s0 = s0_at.get(horizon)
    if s0 is None or not 0 < s0 < 1:
        raise OptionError(
            f"cannot place absolute-risk cut-offs: the baseline survival at {horizon:g} years is not estimable",
            fix="Use the lp or score scale, or a cohort with longer follow-up.",
            option="cutoff_scale",
        )
    # risk r = 1 - s0 ** exp(lp)  <=>  lp = log(log(1 - r) / log(s0))
    return tuple(float(np.log(np.log(1.0 - r) / np.log(s0))) for r in spec.values)


def assign_groups(lp: np.ndarray, cutoffs: tuple[float, ...]) -> np.ndarray:
    """Group index of each lp: the number of cut-offs at or below it."""
    return np.searchsorted(np.asarray(cutoffs, dtype=float), np.asarray(lp, dtype=float), side="right")
