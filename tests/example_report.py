"""A synthetic, clearly-marked demo :class:`ReportData` for the report tests and layout previews.

Test-only (not part of the shipped package). Everything here is made up from a seeded random generator (a
simulated cohort, a drawn "tissue" on a blank slide); it is never a patient's result and it always carries
the demo flag. Run ``python tests/example_report.py OUT.pdf`` to render a preview.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from lifelines import KaplanMeierFitter

from sequoia_clinic import __version__
from sequoia_clinic.qc import QCCode, QCWarning
from sequoia_clinic.report.model import (
    AbsoluteRisk,
    CalibrationCohort,
    GeneRow,
    KMCurve,
    Metric,
    PatientInfo,
    Provenance,
    QualityControl,
    ReportData,
    RiskResult,
    SignatureResult,
    SlideImages,
    SlideInfo,
    TileHeatmap,
    make_report_id,
)

GROUPS = ("Low", "Intermediate", "High")
AT_RISK_TIMES = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0)
EXAMPLE_PATIENT = PatientInfo(
    name="Doe, Jane",
    patient_id="PAT-0012345",
    birth_date="1961-04-23",
    sex="F",
    accession="S24-004711",
    specimen="Left breast, core biopsy, invasive carcinoma NST",
    scan_date="2024-03-02",
    scanner="Aperio AT2 (synthetic)",
)
_GENES = (
    "MKI67",
    "BIRC5",
    "CCNB1",
    "AURKA",
    "MYBL2",
    "ESR1",
    "PGR",
    "BCL2",
    "SCUBE2",
    "GRB7",
    "ERBB2",
    "MMP11",
    "CTSV",
    "CD68",
    "GSTM1",
    "BAG1",
)


def _km_curve(name: str, times: np.ndarray, events: np.ndarray) -> KMCurve:
    fitter = KaplanMeierFitter().fit(times, events)
    survival = fitter.survival_function_.iloc[:, 0]
    ci = fitter.confidence_interval_survival_function_
    grid = np.asarray(survival.index, dtype=float)
    at_risk = [int((times >= t).sum()) for t in AT_RISK_TIMES]
    return KMCurve(
        group=name,
        times=tuple(grid.tolist()),
        survival=tuple(survival.to_numpy(float).tolist()),
        lower=tuple(ci.iloc[:, 0].to_numpy(float).tolist()),
        upper=tuple(ci.iloc[:, 1].to_numpy(float).tolist()),
        at_risk=tuple(at_risk),
        n=len(times),
        events=int(events.sum()),
    )


def example_cohort(rng: np.random.Generator, n: int = 198) -> CalibrationCohort:
    """A simulated calibration cohort: LP ~ N(0, 0.7), exponential event times, uniform censoring."""
    lp = rng.normal(0.0, 0.7, n)
    event_time = rng.exponential(1 / (0.025 * np.exp(lp)))
    censor_time = rng.uniform(3, 16, n)
    times = np.minimum(event_time, censor_time).clip(0.05)
    events = event_time <= censor_time
    cutoffs = (100 / 3, 200 / 3)
    edges = np.percentile(lp, cutoffs)
    groups = np.searchsorted(edges, lp, side="right")
    curves = tuple(_km_curve(name, times[groups == g], events[groups == g]) for g, name in enumerate(GROUPS))
    return CalibrationCohort(
        name="Simulated cohort",
        n=n,
        events=int(events.sum()),
        endpoint="Distant metastasis-free survival",
        time_unit="years",
        linear_predictors=tuple(np.round(lp, 6).tolist()),
        cutoffs=(33.3, 66.7),
        cutoff_source="tertiles of the cross-validated scores, fixed before validation",
        km_curves=curves,
        at_risk_times=AT_RISK_TIMES,
        performance=(
            Metric("Harrell C", 0.686, 0.62, 0.75),
            Metric("Uno C", 0.711, 0.635, 0.769, "tau = 10 years"),
            Metric("AUC at 5 years", 0.731, 0.65, 0.81),
            Metric("AUC at 10 years", 0.736, 0.66, 0.81),
            Metric("Integrated Brier score", 0.144, 0.12, 0.17, "times 3, 5, 8, 10 years; KM null 0.151"),
            Metric("Calibration slope", 0.64, 0.28, 1.00, "at 10 years"),
        ),
        description="Simulated data for layout previews; not a real cohort",
    )


def _synthetic_slide(rng: np.random.Generator, width: int, height: int, tile: int) -> SlideImages:
    thumb_w, thumb_h = 300, int(300 * height / width)
    yy, xx = np.mgrid[0:thumb_h, 0:thumb_w]
    field = np.zeros((thumb_h, thumb_w))
    for _ in range(6):
        cx, cy = rng.uniform(0.25, 0.75) * thumb_w, rng.uniform(0.2, 0.8) * thumb_h
        r = rng.uniform(0.12, 0.22) * thumb_w
        field += np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2)))
    mask = field > 0.6
    texture = rng.normal(0, 12, (thumb_h, thumb_w, 1))
    pink = np.array([214.0, 140.0, 190.0]) + texture
    thumbnail = np.where(mask[..., None], pink, 244.0 + texture / 4).clip(0, 255).astype(np.uint8)
    sx, sy = width / thumb_w, height / thumb_h
    coords = [
        (x, y)
        for y in range(0, height - tile, tile)
        for x in range(0, width - tile, tile)
        if mask[int((y + tile / 2) / sy), int((x + tile / 2) / sx)]
    ]
    coords_arr = np.array(coords, dtype=np.int64)
    centre = coords_arr + tile / 2
    heatmaps = []
    for k, gene in enumerate(_GENES[:4]):
        wave = np.sin(centre[:, 0] / width * (3 + k)) + np.cos(centre[:, 1] / height * (2 + k))
        heatmaps.append(TileHeatmap(gene, (6 + wave + rng.normal(0, 0.2, len(centre))).astype(np.float32)))
    return SlideImages(
        thumbnail=thumbnail,
        tissue_mask=mask,
        tile_coords=coords_arr,
        tile_size=tile,
        heatmaps=tuple(heatmaps),
        heatmap_statement="Heatmaps: per-tile predicted expression (synthetic values for this preview).",
    )


def example_report_data(
    seed: int = 0, demo: bool = True, n_genes: int = 16, patient: PatientInfo = EXAMPLE_PATIENT
) -> ReportData:
    """A complete synthetic report (demo banner on) for previews and tests."""
    rng = np.random.default_rng(seed)
    cohort = example_cohort(rng)
    lp = 0.62
    score = float((np.asarray(cohort.linear_predictors) < lp).mean() * 100)
    group = int(np.searchsorted(cohort.cutoffs, score, side="right"))
    genes = tuple(
        GeneRow(
            gene=name,
            expression=float(rng.uniform(3, 11)),
            z_score=float(rng.normal(0, 1.2)),
            percentile=float(rng.uniform(2, 98)),
            hazard_ratio_per_sd=float(np.exp(rng.normal(0, 0.35))),
            in_calibration_range=bool(i != 3),
        )
        for i, name in enumerate(_GENES[:n_genes])
    )
    width, height, mpp = 22200, 29670, 0.499
    slide_sha = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
    bundle_sha, model_sha = "1" * 64, "2" * 64
    images = _synthetic_slide(rng, width, height, tile=512)
    return ReportData(
        patient=patient,
        report_id=make_report_id(slide_sha, bundle_sha, model_sha, __version__),
        report_date="2024-03-05",
        created="2024-03-05T10:15:00Z",
        slide=SlideInfo(
            path="example-slide.svs",
            sha256=slide_sha,
            format="svs",
            width_px=width,
            height_px=height,
            mpp=mpp,
            mpp_source="slide metadata (aperio.MPP)",
        ),
        qc=QualityControl(
            tissue_area_mm2=round(len(images.tile_coords) * (512 * mpp / 1000) ** 2, 1),
            tissue_fraction=0.29,
            tiles_kept=len(images.tile_coords) + 37,
            tiles_used=len(images.tile_coords),
            warnings=(QCWarning(QCCode.EMPTY_CLUSTERS, "Clusters merged: 100 requested, 87 distinct."),),
        ),
        risk=RiskResult(
            linear_predictor=lp,
            score=score,
            group_names=GROUPS,
            group_index=group,
            absolute_risks=(AbsoluteRisk(5.0, 0.142, 0.091, 0.205), AbsoluteRisk(10.0, 0.263, 0.178, 0.351)),
        ),
        cohort=cohort,
        signature=SignatureResult(
            name="Example 16-gene signature",
            expression_unit="log2(TPM+1)",
            genes=genes,
            description="Synthetic values for layout previews.",
        ),
        provenance=Provenance(
            software_version=__version__,
            bundle_name="demo",
            bundle_version="0.1.0",
            bundle_sha256=bundle_sha,
            bundle_trained=False,
            risk_model_name="example-cox",
            risk_model_sha256=model_sha,
            encoder="UNI ViT-L/16 architecture, random weights (demo)",
        ),
        images=images,
        timings={
            "ingest": 0.4,
            "tiles": 2.1,
            "encoder": 31.7,
            "clusters": 1.2,
            "expression": 0.3,
            "risk": 0.1,
            "report": 1.9,
        },
        demo=demo,
    )


def main(argv: list[str]) -> int:
    from sequoia_clinic.report.pdf import render_report_pdf

    if len(argv) != 1:
        sys.stderr.write("usage: python tests/example_report.py OUT.pdf\n")
        return 2
    render_report_pdf(example_report_data(), Path(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
