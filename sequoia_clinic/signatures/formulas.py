"""Research formulas of the bundled signatures, applied to one sample's gene-level expression.

Each formula follows the published description as implemented in Bioconductor genefu (see each
function). They are research approximations: a score computed from *predicted* expression is not the
commercial assay's score, and published cut-offs do not transfer without recalibration (``calibrate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from sequoia_clinic.errors import SignatureError
from sequoia_clinic.signatures.registry import Signature


@dataclass(frozen=True)
class SignatureScore:
    """A signature's score for one sample; ``label`` is a category where the formula defines one."""

    signature: str
    value: float
    label: str | None = None
    components: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "signature": self.signature,
            "value": self.value,
            "label": self.label,
            "components": dict(self.components),
            "notes": list(self.notes),
        }


def _values(
    signature: Signature, expression: Mapping[str, float], genes: tuple[str, ...] | None = None
) -> np.ndarray:
    genes = signature.genes if genes is None else genes
    missing = [g for g in genes if g not in expression]
    if missing:
        raise SignatureError(
            f"signature {signature.name}: {len(missing)} gene(s) missing from the expression input "
            f"({', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''})",
            fix="Provide every signature gene (SEQUOIA symbols).",
        )
    values = np.array([float(expression[g]) for g in genes])
    bad = [g for g, v in zip(genes, values, strict=True) if not np.isfinite(v)]
    if bad:
        raise SignatureError(
            f"signature {signature.name}: non-finite value for gene {bad[0]}", fix="Fix the input."
        )
    return values


def weighted_sum(signature: Signature, expression: Mapping[str, float]) -> SignatureScore:
    """Sum of weight x value (mean of the values when the signature has no weights)."""
    x = _values(signature, expression)
    if signature.weights is None:
        return SignatureScore(signature.name, float(x.mean()), notes=("unweighted mean of the genes",))
    return SignatureScore(signature.name, float(np.dot(signature.weights, x)))


def signed_mean(signature: Signature, expression: Mapping[str, float]) -> SignatureScore:
    """Mean of sign(weight) x value (the raw GGI); scaling to grade means needs a graded reference cohort."""
    x = _values(signature, expression)
    signs = np.sign(np.asarray(signature.weights if signature.weights is not None else np.ones_like(x)))
    return SignatureScore(signature.name, float(np.mean(signs * x)), notes=("raw (unscaled) signed mean",))


def wang76(
    signature: Signature, expression: Mapping[str, float], er_positive: bool | None = None
) -> SignatureScore:
    """Wang relapse score: 313.5 + sum over ER+ genes (ER+), or 280 + sum over ER- genes (ER-)."""
    if er_positive is None:
        raise SignatureError(
            "the wang76 relapse score needs the ER status", fix="Pass er_positive=True or False."
        )
    subset = "ER+" if er_positive else "ER-"
    keep = [i for i, g in enumerate(signature.groups or ()) if g == subset]
    genes = tuple(signature.genes[i] for i in keep)
    weights = np.array([signature.weights[i] for i in keep]) if signature.weights else np.ones(len(keep))
    value = (313.5 if er_positive else 280.0) + float(np.dot(weights, _values(signature, expression, genes)))
    return SignatureScore(
        signature.name,
        value,
        "high" if value >= 0 else "low",
        notes=("constants of the original MAS5 probe scale; they do not transfer to other scales",),
    )


def oncotype21(signature: Signature, expression: Mapping[str, float]) -> SignatureScore:
    """Research Recurrence Score (Paik 2004) on reference-normalised values on a 0-15 scale."""
    x = dict(zip(signature.genes, _values(signature, expression), strict=True))
    grb7 = max(0.9 * x["GRB7"] + 0.1 * x["ERBB2"], 8.0)
    er = (0.8 * x["ESR1"] + 1.2 * x["PGR"] + x["BCL2"] + x["SCUBE2"]) / 4.0
    prolif = max((x["BIRC5"] + x["MKI67"] + x["MYBL2"] + x["CCNB1"] + x["AURKA"]) / 5.0, 6.5)
    invasion = (x["CTSV"] + x["MMP11"]) / 2.0
    unscaled = (
        0.47 * grb7
        - 0.34 * er
        + 1.04 * prolif
        + 0.10 * invasion
        + 0.05 * x["CD68"]
        - 0.08 * x["GSTM1"]
        - 0.07 * x["BAG1"]
    )
    score = float(np.clip(20.0 * (unscaled - 6.7), 0.0, 100.0))
    label = "low" if score < 18 else ("intermediate" if score < 31 else "high")
    return SignatureScore(
        signature.name,
        score,
        label,
        {
            "her2_group": float(grb7),
            "er_group": float(er),
            "proliferation_group": float(prolif),
            "invasion_group": float(invasion),
            "rs_unscaled": float(unscaled),
        },
        ("research formula; not the commercial Recurrence Score; 18/31 cut-offs are the original assay's",),
    )


def endopredict(signature: Signature, expression: Mapping[str, float]) -> SignatureScore:
    """EndoPredict array approximation as in genefu (8 genes of interest, reference genes unused)."""
    goi = [i for i, g in enumerate(signature.groups or ()) if g == "GOI"]
    genes = tuple(signature.genes[i] for i in goi)
    x = _values(signature, expression, genes)
    x = x - x.mean() + np.log2(500.0)
    a = np.array([signature.extra["a"][i] for i in goi])
    b = np.array([signature.extra["b"][i] for i in goi])
    weights = np.array([signature.weights[i] for i in goi]) if signature.weights else np.ones(len(goi))
    unscaled = float(np.dot(weights, (x - b) / a) - 2.63)
    score = float(np.clip(1.5 * unscaled + 18.95, 0.0, 15.0))
    return SignatureScore(
        signature.name,
        score,
        "high" if score >= 5 else "low",
        {"ep_unscaled": unscaled},
        ("array approximation; the EP >= 5 cut-off belongs to the RT-qPCR assay",),
    )


def pam50(signature: Signature, expression: Mapping[str, float]) -> SignatureScore:
    """Nearest PAM50 centroid by Spearman correlation, and the research ROR-S (correlation-based)."""
    x = _values(signature, expression)
    corr = {
        name: float(spearmanr(x, np.asarray(signature.extra[name])).statistic)
        for name in ("Basal", "Her2", "LumA", "LumB", "Normal")
    }
    subtype = max(corr, key=corr.__getitem__)
    ror = 0.05 * corr["Basal"] + 0.12 * corr["Her2"] - 0.34 * corr["LumA"] + 0.23 * corr["LumB"]
    return SignatureScore(
        signature.name,
        float(ror),
        subtype,
        corr,
        ("value is the unscaled ROR-S; input should be median-centred per gene across a cohort",),
    )


def gene70(signature: Signature, expression: Mapping[str, float]) -> SignatureScore:
    """Research 70-gene score: minus the Spearman correlation to the average good-prognosis profile."""
    x = _values(signature, expression)
    value = -float(spearmanr(x, np.asarray(signature.extra["average.good.prognosis.profile"])).statistic)
    return SignatureScore(
        signature.name, value, "high" if value >= -0.3 else "low", notes=("research score, not MammaPrint",)
    )


FORMULAS = {
    "weighted_sum": weighted_sum,
    "signed_mean": signed_mean,
    "oncotype21": oncotype21,
    "endopredict": endopredict,
    "pam50": pam50,
    "gene70": gene70,
}


def score_signature(
    signature: Signature, expression: Mapping[str, float], er_positive: bool | None = None
) -> SignatureScore:
    """Apply the signature's own formula (``signature.formula``) to one sample."""
    if signature.formula == "wang76":
        if er_positive is None:
            return weighted_sum(signature, expression)
        return wang76(signature, expression, er_positive)
    return FORMULAS[signature.formula](signature, expression)
