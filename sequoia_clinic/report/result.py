"""Build the result.json document from :class:`ReportData` (schema: sequoia_clinic/schemas/result.schema.json).

Everything that changes from run to run lives under two top-level keys only: ``created`` (timestamp) and
``timings`` (seconds per stage), so a determinism check can drop those two and compare the rest.
"""

from __future__ import annotations

from typing import Any

from sequoia_clinic.report import content
from sequoia_clinic.report.model import ReportData
from sequoia_clinic.report.schema import RESULT_SCHEMA_VERSION, validate_result
from sequoia_clinic.report.templates import ReportText, load_report_text

VOLATILE_KEYS = ("created", "timings")  # the only keys that may differ between two runs on the same slide


def _patient(data: ReportData) -> dict[str, Any]:
    p = data.patient
    return {
        "name": p.name,
        "patient_id": p.patient_id,
        "birth_date": p.birth_date,
        "sex": p.sex,
        "accession": p.accession,
        "specimen": p.specimen,
        "scan_date": p.scan_date,
        "scanner": p.scanner,
        "pseudonymised": p.pseudonymised,
    }


def _risk(data: ReportData) -> dict[str, Any]:
    risk, cohort = data.risk, data.cohort
    return {
        "linear_predictor": risk.linear_predictor,
        "score": risk.score,
        "group": risk.group,
        "group_index": risk.group_index,
        "group_names": list(risk.group_names),
        "cutoffs": list(cohort.cutoffs),
        "cutoff_source": cohort.cutoff_source,
        "absolute_risk": [
            {
                "horizon": item.horizon,
                "time_unit": cohort.time_unit,
                "risk": item.risk,
                "lower": item.lower,
                "upper": item.upper,
            }
            for item in sorted(risk.absolute_risks, key=lambda r: r.horizon)
        ],
        "out_of_range": {
            "linear_predictor": risk.linear_predictor_out_of_range,
            "genes": list(content.genes_out_of_range(data.signature)),
        },
    }


def _signature(data: ReportData) -> dict[str, Any]:
    sig = data.signature
    return {
        "name": sig.name,
        "expression_unit": sig.expression_unit,
        "score": None,  # the published signature scores need measured array values; see the schema
        "genes": [
            {
                "gene": row.gene,
                "expression": row.expression,
                "z_score": row.z_score,
                "percentile": row.percentile,
                "hazard_ratio_per_sd": row.hazard_ratio_per_sd,
                "in_calibration_range": row.in_calibration_range,
                "cv_r": row.cv_r,
                "reliable": row.reliable,
            }
            for row in sig.genes
        ],
        "reliability": None
        if sig.reliability is None
        else {"rule": sig.reliability, "reliable": sig.reliable_count, "genes": len(sig.genes)},
    }


def _calibration(data: ReportData) -> dict[str, Any]:
    cohort = data.cohort
    return {
        "cohort": cohort.name,
        "description": cohort.description,
        "n": cohort.n,
        "events": cohort.events,
        "endpoint": cohort.endpoint,
        "time_unit": cohort.time_unit,
        "performance": [
            {"name": m.name, "value": m.value, "lower": m.lower, "upper": m.upper, "note": m.note}
            for m in cohort.performance
        ],
    }


def _clinical(data: ReportData) -> dict[str, Any] | None:
    clinical = data.clinical
    if clinical is None:
        return None
    return {
        "given": [{"name": label, "value": value} for label, value in clinical.given],
        "model_covariates": list(clinical.model_covariates),
        "genomic_linear_predictor": clinical.genomic_lp,
        "clinical_linear_predictor": clinical.clinical_lp,
        "population": list(clinical.population),
        "specimen_type": clinical.specimen_type,
    }


def _repeatability(data: ReportData) -> dict[str, Any] | None:
    rep = data.repeatability
    if rep is None:
        return None
    return {
        "repeats": rep.repeats,
        "varied": rep.varied,
        "score": [rep.score_low, rep.score_high],
        "linear_predictor": [rep.lp_low, rep.lp_high],
        "fold_linear_predictor": [rep.fold_lp_low, rep.fold_lp_high],
        "same_group": rep.same_group,
        "unstable": rep.unstable,
    }


def result_dict(data: ReportData, text: ReportText | None = None) -> dict[str, Any]:
    """The result.json document for ``data``, validated against the schema before it is returned."""
    text = text or load_report_text()
    prov, slide, qc = data.provenance, data.slide, data.qc
    doc: dict[str, Any] = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "tool": {"name": "sequoia-clinic", "version": prov.software_version},
        "report_id": data.report_id,
        "demo": data.demo,
        "intended_use": {
            "statement": text.intended_use,
            "limitations": list(text.limitations),
            "demo_notice": text.demo_statement if (data.demo or not prov.bundle_trained) else None,
        },
        "patient": _patient(data),
        "slide": {
            "path": slide.path,
            "sha256": slide.sha256,
            "format": slide.format,
            "width_px": slide.width_px,
            "height_px": slide.height_px,
            "mpp": slide.mpp,
            "mpp_source": slide.mpp_source,
        },
        "models": {
            "bundle": {
                "name": prov.bundle_name,
                "version": prov.bundle_version,
                "sha256": prov.bundle_sha256,
                "trained": prov.bundle_trained,
            },
            "encoder": prov.encoder,
            "risk_model": {"name": prov.risk_model_name, "sha256": prov.risk_model_sha256},
            "device": prov.device,
            "precision": prov.precision,
        },
        "qc": {
            "tissue_area_mm2": qc.tissue_area_mm2,
            "tissue_fraction": qc.tissue_fraction,
            "tiles_kept": qc.tiles_kept,
            "tiles_used": qc.tiles_used,
            "tile_size_px": data.images.tile_size if data.images is not None else None,
            "warnings": [w.message for w in content.all_warnings(data, text)],
            "codes": [w.code.value for w in content.all_warnings(data, text)],
        },
        "signature": _signature(data),
        "risk": _risk(data),
        "calibration": _calibration(data),
        "clinical": _clinical(data),
        "repeatability": _repeatability(data),
        "model_card": [{"item": n, "topic": topic, "text": text} for n, topic, text in data.model_card],
        "created": data.created,
        "timings": {
            **{name: float(seconds) for name, seconds in data.timings.items() if name != "total"},
            "total": data.total_seconds,
        },
    }
    validate_result(doc)
    return doc


def without_volatile(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without the keys that legitimately differ between two runs (for determinism checks)."""
    return {key: value for key, value in doc.items() if key not in VOLATILE_KEYS}
