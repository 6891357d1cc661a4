"""Survival and risk: Cox risk models (calibrate, apply), cohort tables, Kaplan-Meier stratification."""

from sequoia_clinic.survival.cutoffs import CutoffSpec
from sequoia_clinic.survival.fit import fit_risk_model
from sequoia_clinic.survival.model import HorizonRisk, PatientRisk, RiskModel
from sequoia_clinic.survival.records import ExpressionSource

__all__ = ["CutoffSpec", "ExpressionSource", "HorizonRisk", "PatientRisk", "RiskModel", "fit_risk_model"]
