"""Rebuild the shipped default risk model: wang76 genes on GSE7390 distant-metastasis-free survival.

    python -m sequoia_clinic.survival.build_default --out models/risk   # in a checkout

(``--out`` is required, so that the installed package folder is never written by accident; the shipped copy is
``models/risk/gse7390-wang76.json``, found with ``sequoia_clinic.locations.default_risk_model``.)

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
from sequoia_clinic.signatures import collapse_probes, get_signature
from sequoia_clinic.survival.card import write_model_and_card
from sequoia_clinic.survival.cutoffs import CutoffSpec
from sequoia_clinic.survival.fit import fit_risk_model
from sequoia_clinic.survival.model import RiskModel
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


def gse7390_table() -> pd.DataFrame:
    """GSE7390 as a gene-level cohort table: wang76 genes (SEQUOIA symbols), time_days, dmfs_event."""
    from sksurv.datasets import load_breast_cancer

    x, y = load_breast_cancer()
    table = collapse_probes(x, get_signature("wang76"), column_prefix="X")
    table["time_days"] = y["t.tdm"]
    table["dmfs_event"] = y["e.tdm"].astype(int)
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
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="Folder for the model JSON and its card, e.g. models/risk."
    )
    args = parser.parse_args(argv)
    model = build()
    for path in write_model_and_card(model, args.out / DEFAULT_RISK_MODEL_FILE):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
