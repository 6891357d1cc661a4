"""Rebuild the shipped default risk models: wang76 genes (and genes + clinical) on GSE7390 DMFS.

    python -m sequoia_clinic.survival.build_default --out models/risk   # in a checkout

(``--out`` is required, so that the installed package folder is never written by accident; the shipped copy is
``models/risk/gse7390-wang76.json``, found with ``sequoia_clinic.locations.default_risk_model``; the second
default, ``models/risk/gse7390-wang76-clinical.json``, adds age, tumour size, grade and ER status as
unpenalised covariates, fitted with the same repeated CV so the two are compared on the same folds.)

The cohort is scikit-survival's bundled ``load_breast_cancer()`` (GSE7390, Desmedt et al., Clin Cancer Res
2007: 198 node-negative, systemically untreated patients, 51 distant metastases, Affymetrix HG-U133A,
log2 scale). Its 76 columns are exactly the Wang 76-gene probes; they are collapsed to the 57 wang76
genes in the SEQUOIA list by the mean of each gene's probes (probes without a gene, and genes absent
from the SEQUOIA list, are dropped and listed in the model). Deterministic: same inputs, same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from sequoia_clinic.locations import DEFAULT_RISK_MODEL_FILE
from sequoia_clinic.settings import RiskSettings
from sequoia_clinic.signatures.probes import collapse_probes
from sequoia_clinic.signatures.registry import get_signature
from sequoia_clinic.survival.card import write_model_and_card
from sequoia_clinic.survival.clinical import MissingRule
from sequoia_clinic.survival.cutoffs import CutoffSpec
from sequoia_clinic.survival.fit import fit_risk_model
from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.population import Population
from sequoia_clinic.survival.records import ExpressionSource

NOTES = (
    "Calibrated on MEASURED microarray expression (GSE7390, Affymetrix HG-U133A, log2 scale) of the wang76 "
    "genes, probes averaged per gene. It is not calibrated on expression PREDICTED from H&E slides: scores of "
    "slide-predicted expression need a re-calibration on predicted expression with outcomes "
    "(`sequoia-clinic calibrate`); until then risks from slides are not valid.",
    "Cohort: 198 node-negative, systemically untreated patients younger than 61 (TRANSBIG validation series of "
    "the 76-gene signature); endpoint distant-metastasis-free survival (51 events). Other populations "
    "(node-positive, treated) have different baseline risks.",
    "Risk groups are tertiles of the training linear predictor: data-driven and exploratory, not clinically "
    "validated cut-offs.",
    "Desmedt et al. report a strongly time-dependent effect of the 76-gene signature in this cohort "
    "(HR 13.6 at 5 years vs 5.1 at 10 years).",
    "Research use only: not a diagnostic device and no substitute for Oncotype DX, Prosigna or MammaPrint.",
)


CLINICAL_FILE = "gse7390-wang76-clinical.json"
CLINICAL_COVARIATES = ("age", "size", "grade", "er")
CLINICAL_NOTE = (
    "Clinico-genomic model: the wang76 genes (penalised) plus age, tumour size (cm), histological grade "
    "(ordinal 1-3) and ER status (reference negative), unpenalised; grade is missing ('unknown') for 2 of "
    "198 patients and was imputed with the cohort's median grade (2). `score` needs --age, --tumour-size, "
    "--grade and --er with this model."
)
GAIN_NOTE = (
    "Gain over genes alone, same 5-fold x 10 CV folds (genes / genes + clinical): Harrell's C 0.655 / 0.651, "
    "td-AUC 5 y 0.707 / 0.672, IBS 0.125 / 0.128, calibration slope 10 y 1.09 / 0.73: no gain in this "
    "node-negative untreated cohort, and the four unpenalised covariates overfit (slope < 1). It is shipped "
    "to show and test the clinico-genomic path, not because it predicts better."
)
POPULATION = Population(
    description="node-negative, systemically untreated, age < 61 (TRANSBIG validation series, GSE7390)",
    max_nodes=0.0,
    age_min=24.0,
    age_max=60.0,
    specimen_types=("resection",),
    treatment="no adjuvant systemic therapy (surgery +/- radiotherapy only)",
    eligibility="T1-T2 (<= 5 cm), node-negative, age < 61, no adjuvant systemic therapy; ER positive or negative",
    data_source="TRANSBIG consortium, 6 European centres (Desmedt et al., Clin Cancer Res 2007; GEO GSE7390)",
    accrual="diagnosed 1980-1998 (per Desmedt et al. 2007)",
    follow_up_end="median follow-up 13.6 years (Desmedt et al. 2007)",
)


def gse7390_table() -> pd.DataFrame:
    """GSE7390 as a gene-level cohort table: wang76 genes (SEQUOIA symbols), time_days, dmfs_event, and
    the clinical columns age, size (cm), grade (as published: words, 'unkown' for 2), er."""
    from sksurv.datasets import load_breast_cancer

    x, y = load_breast_cancer()
    table = collapse_probes(x, get_signature("wang76"), column_prefix="X")
    table["time_days"] = y["t.tdm"]
    table["dmfs_event"] = y["e.tdm"].astype(int)
    table["age"] = x["age"].to_numpy()
    table["size"] = x["size"].to_numpy()
    table["grade"] = x["grade"].astype(str).to_numpy()
    table["er"] = x["er"].astype(str).to_numpy()
    return table


def build(settings: RiskSettings | None = None) -> RiskModel:
    """Fit the default model (tertile groups, default settings)."""
    return fit_risk_model(
        gse7390_table(),
        get_signature("wang76"),
        time_col="time_days",
        event_col="dmfs_event",
        time_unit="days",
        cutoffs=CutoffSpec("tertiles"),
        settings=settings or RiskSettings(),
        endpoint="distant metastasis",
        cohort_name="GSE7390 (Desmedt 2007), DMFS",
        notes=NOTES,
        expression_source=ExpressionSource.MEASURED,
        population=POPULATION,
    )


def build_clinical(settings: RiskSettings | None = None) -> RiskModel:
    """The clinico-genomic default: wang76 genes + age, size, grade, ER (same folds and settings)."""
    return fit_risk_model(
        gse7390_table(),
        get_signature("wang76"),
        time_col="time_days",
        event_col="dmfs_event",
        time_unit="days",
        covariates=CLINICAL_COVARIATES,
        cutoffs=CutoffSpec("tertiles"),
        settings=settings or RiskSettings(),
        endpoint="distant metastasis",
        cohort_name="GSE7390 (Desmedt 2007), DMFS",
        notes=(CLINICAL_NOTE, GAIN_NOTE, *NOTES),
        expression_source=ExpressionSource.MEASURED,
        missing=MissingRule.IMPUTE,
        population=POPULATION,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="Folder for the model JSON and its card, e.g. models/risk."
    )
    args = parser.parse_args(argv)
    for model, name in ((build(), DEFAULT_RISK_MODEL_FILE), (build_clinical(), CLINICAL_FILE)):
        for path in write_model_and_card(model, args.out / name):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
