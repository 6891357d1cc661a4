"""Report content derived from :class:`ReportData` that the PDF and result.json share.

Kept in one place so both outputs say the same thing: the full warning list (pipeline warnings plus the
ones the report derives itself), the plain-language sentence, the gene rows shown and number formatting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sequoia_clinic.qc import QCCode, QCWarning, unique
from sequoia_clinic.report.model import AbsoluteRisk, GeneRow, ReportData, SignatureResult
from sequoia_clinic.report.templates import ReportText


def all_warnings(data: ReportData, text: ReportText) -> tuple[QCWarning, ...]:
    """The pipeline's QC warnings followed by the report's own (untrained model, out of range); no repeats."""
    derived: list[QCWarning] = []
    if not data.provenance.bundle_trained:
        derived.append(QCWarning(QCCode.UNTRAINED_BUNDLE, text.warnings["untrained"]))
    if data.risk.linear_predictor_out_of_range:
        derived.append(QCWarning(QCCode.LINEAR_PREDICTOR_EXTRAPOLATED, text.warnings["lp_out_of_range"]))
    outside = genes_out_of_range(data.signature)
    if outside:
        message = text.fill("warnings", "genes_out_of_range", count=len(outside), genes=", ".join(outside))
        derived.append(QCWarning(QCCode.INPUTS_OUT_OF_RANGE, message))
    return unique([*data.qc.warnings, *derived])


PAGE_ONE_CODES = frozenset(
    {
        QCCode.OUTSIDE_POPULATION,
        QCCode.SPECIMEN_NOT_DEVELOPED,
        QCCode.INADEQUATE_SPECIMEN,
        QCCode.UNSTABLE_GROUP,
    }
)


def page_one_warnings(data: ReportData, text: ReportText) -> tuple[QCWarning, ...]:
    """The warnings page 1 states in full: population, specimen type, adequacy, unstable group."""
    return tuple(w for w in all_warnings(data, text) if w.code in PAGE_ONE_CODES)


def genes_out_of_range(signature: SignatureResult) -> tuple[str, ...]:
    return tuple(row.gene for row in signature.genes if not row.in_calibration_range)


def percent(probability: float | None) -> str:
    """0.1234 -> '12%'; below 1% one decimal; None -> '–'."""
    if probability is None:
        return "–"
    value = 100 * probability
    return f"{value:.1f}%" if value < 1 else f"{value:.0f}%"


def horizon_label(horizon: float, unit: str) -> str:
    return f"{horizon:g} {unit}"


def headline_risk(data: ReportData) -> AbsoluteRisk | None:
    """The absolute risk at the longest horizon (the one the plain-language sentence talks about)."""
    if not data.risk.absolute_risks:
        return None
    return max(data.risk.absolute_risks, key=lambda item: item.horizon)


def plain_sentence(data: ReportData, text: ReportText) -> str:
    item = headline_risk(data)
    values = {
        "group": data.risk.group.lower(),
        "score": f"{data.risk.score:.0f}",
        "cohort": data.cohort.name,
        "endpoint_event": text.sentences["endpoint_event"],
    }
    if item is None:
        return text.fill("sentences", "no_risk", **values)
    values |= {"horizon": f"{item.horizon:g}", "risk": f"{round(100 * item.risk)}"}
    if item.lower is None or item.upper is None:
        return text.fill("sentences", "no_ci", **values)
    return text.fill(
        "sentences",
        "default",
        lower=f"{round(100 * item.lower)}",
        upper=f"{round(100 * item.upper)}",
        **values,
    )


def contribution(row: GeneRow) -> float:
    """Signed push of one gene on the risk: z-score times log hazard ratio per SD."""
    return row.z_score * math.log(row.hazard_ratio_per_sd)


def gene_rows_for_pdf(signature: SignatureResult, limit: int) -> tuple[Sequence[GeneRow], bool]:
    """Genes ordered by z-score, highest first; when there are more than ``limit``, the ``limit`` genes
    with the largest |contribution| are kept."""
    rows = list(signature.genes)
    truncated = len(rows) > limit
    if truncated:
        rows = sorted(rows, key=lambda r: (-abs(contribution(r)), r.gene))[:limit]
    rows.sort(key=lambda r: (-r.z_score, r.gene))
    return rows, truncated


def top_heatmap_genes(data: ReportData, count: int) -> list[str]:
    """Genes with a heatmap, largest |contribution| first."""
    if data.images is None:
        return []
    available = {heatmap.gene for heatmap in data.images.heatmaps}
    rows = [row for row in data.signature.genes if row.gene in available]
    rows.sort(key=lambda r: (-abs(contribution(r)), r.gene))
    ranked = [row.gene for row in rows]
    extra = sorted(available - set(ranked))  # heatmaps of genes outside the table, if any
    return (ranked + extra)[:count]
