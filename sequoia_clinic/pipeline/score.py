"""score: one slide → ``report.pdf``, ``result.json`` and (optionally) ``report.dcm``.

This module only wires the stages together; each stage lives in its own package:

    slides (open, tissue, tiles) → inference (encoder, cluster features, ViS folds)
    → survival (Cox risk model on the signature genes) → aggregator.spatial (per-tile maps)
    → report (PDF, result.json, DICOM Encapsulated PDF)

:func:`score_slide` is a pure function of its request and settings apart from the clock (``created`` and
the timings), so two runs on the same slide give the same ``result.json`` modulo those keys. Outputs are
written into a temporary folder beside ``out_dir`` and moved into place only when every file succeeded.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from pydicom.errors import InvalidDicomError

from sequoia_clinic import __version__
from sequoia_clinic.aggregator.spatial import spatial_expression
from sequoia_clinic.bundles import REPO_MODELS, Bundle, load_bundle, load_bundle_ensemble
from sequoia_clinic.errors import OptionError, RiskModelError, SequoiaError
from sequoia_clinic.fileio import atomic_dir, check_output_dir, sha256_file, write_json_atomic
from sequoia_clinic.pipeline.predict import InferenceResult, run_inference
from sequoia_clinic.report import (
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
    render_report_pdf_bytes,
    result_dict,
)
from sequoia_clinic.report.deidentify import deidentify_report, deidentify_study, pseudonym_key
from sequoia_clinic.report.dicom import (
    StudyInfo,
    patient_from_dicom,
    study_from_dicom,
    write_encapsulated_pdf,
)
from sequoia_clinic.report.templates import load_report_text
from sequoia_clinic.settings import Settings
from sequoia_clinic.slides import open_slide
from sequoia_clinic.slides.dicom_backend import series_files
from sequoia_clinic.survival import PatientRisk, RiskModel

DEFAULT_RISK_MODEL = REPO_MODELS / "risk" / "gse7390-wang76.json"
FORMATS = ("pdf", "json", "dicom")
THUMBNAIL_PX = 1024
MPP_SOURCES = {
    "user": "--mpp option (user-supplied)",
    "vendor": "slide metadata (vendor pixel size)",
    "tiff-resolution": "TIFF resolution tags",
    "objective-power": "estimated from objective power (10 / power)",
}
StageCallback = Callable[[str], None]


@dataclass(frozen=True)
class PatientOptions:
    """Patient and specimen fields given on the command line; they override the slide's own."""

    name: str | None = None
    patient_id: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    accession: str | None = None
    specimen: str | None = None


@dataclass(frozen=True)
class ScoreRequest:
    """What to score and where to write it."""

    slide: Path
    out_dir: Path
    bundle: str | Path = "sequoia-brca-demo"
    risk_model: Path | None = None  # None: the bundle's own, else models/risk/gse7390-wang76.json
    mpp: float | None = None
    patient: PatientOptions = field(default_factory=PatientOptions)
    deidentify: bool = False
    formats: tuple[str, ...] = ("pdf", "json")


@dataclass(frozen=True)
class ScoreOutcome:
    """What a run produced: the files written and the records behind them."""

    out_dir: Path
    files: tuple[Path, ...]
    report: ReportData
    risk: PatientRisk
    inference: InferenceResult


DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
SEX_VALUES = ("F", "M", "O")


def check_patient_options(options: PatientOptions) -> None:
    """Validate the command-line patient fields before any work (messages never repeat the values)."""
    if options.birth_date is not None:
        try:
            ok = DATE_PATTERN.fullmatch(options.birth_date) and dt.date.fromisoformat(options.birth_date)
        except ValueError:
            ok = False
        if not ok:
            raise OptionError("--birth-date is not a valid date", fix="Pass it as YYYY-MM-DD.")
    if options.sex is not None and options.sex.strip().upper() not in SEX_VALUES:
        raise OptionError("--sex is not one of F, M, O", fix="Pass F, M or O.")
    if options.accession is not None and len(options.accession) > 16:
        raise OptionError("--accession is longer than 16 characters (the DICOM limit)", fix="Shorten it.")


def default_out_dir(slide: Path) -> Path:
    """``./<slide-stem>-report/`` (a DICOM folder ``X.dicom`` gives ``X-report``)."""
    return Path.cwd() / f"{Path(slide).stem}-report"


def parse_formats(text: str) -> tuple[str, ...]:
    """'pdf,json,dicom' → a tuple in canonical order; unknown names are an OptionError."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise OptionError(
            f"unknown output format(s) {', '.join(unknown) or '(none)'}",
            fix=f"Use a comma-separated list of {', '.join(FORMATS)}.",
        )
    return tuple(f for f in FORMATS if f in names)


def resolve_risk_model_path(request: ScoreRequest, bundle: Bundle) -> Path:
    """The risk model file: explicit option, the bundle manifest's ``risk_model``, or the shipped default."""
    if request.risk_model is not None:
        return Path(request.risk_model)
    named = bundle.manifest.get("risk_model")
    if isinstance(named, str):
        return (bundle.path / named).resolve()
    return DEFAULT_RISK_MODEL


def _check_genes(model: RiskModel, bundle: Bundle, path: Path) -> dict[str, int]:
    index = {gene: i for i, gene in enumerate(bundle.genes)}
    missing = [g for g in model.genes if g not in index]
    if missing:
        raise RiskModelError(
            f"{len(missing)} gene(s) of the risk model are not predicted by bundle '{bundle.name}': "
            + ", ".join(missing[:8]),
            path=path,
            fix="Use a risk model calibrated on genes this bundle predicts.",
        )
    return index


# ---- patient and study ----------------------------------------------------------------------------------


def _dicom_header(slide: Path) -> pydicom.Dataset | None:
    """Header (no pixels) of the full-resolution instance of a DICOM slide series; None if unreadable.

    Patient and study attributes are the same in every instance of a series; the level-0 VOLUME instance is
    preferred so the report references the image it was computed from, not the label or overview.
    """
    try:
        files = series_files(Path(slide))
    except (SequoiaError, OSError):  # already opened successfully as a slide; just no header to copy
        return None
    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (InvalidDicomError, OSError):
            continue

    def rank(ds: pydicom.Dataset) -> tuple[bool, int]:
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        return ("VOLUME" in image_type, int(ds.get("TotalPixelMatrixColumns") or 0))

    return max(headers, key=rank) if headers else None


def _patient_and_study(
    request: ScoreRequest, info_format: str, metadata: Any
) -> tuple[PatientInfo, StudyInfo | None]:
    """Slide attributes first (DICOM header or vendor tags), then the command-line options on top."""
    study: StudyInfo | None = None
    if info_format == "dicom":
        header = _dicom_header(request.slide)
        patient = patient_from_dicom(header) if header is not None else PatientInfo()
        study = study_from_dicom(header) if header is not None else None
    else:
        patient = PatientInfo(scan_date=_iso_day(metadata.scan_date), scanner=metadata.scanner)
    options = request.patient
    overrides = {
        "name": options.name,
        "patient_id": options.patient_id,
        "birth_date": options.birth_date,
        "sex": options.sex,
        "accession": options.accession,
        "specimen": options.specimen,
    }
    patient = replace(patient, **{k: v for k, v in overrides.items() if v is not None})
    if study is not None and options.accession is not None:
        study = replace(study, accession_number=options.accession)
    return patient, study


def _iso_day(value: str | None) -> str | None:
    """Aperio 'MM/DD/YY' or ISO-like dates → 'YYYY-MM-DD'; anything unparsable is dropped."""
    if not value:
        return None
    day = value.strip().split()[0] if value.strip() else ""
    for pattern in ("%m/%d/%y", "%m/%d/%Y", "%Y-%m-%d", "%Y%m%d", "%Y:%m:%d"):
        try:
            return dt.datetime.strptime(day, pattern).date().isoformat()
        except ValueError:
            continue
    return None


# ---- records for the report -----------------------------------------------------------------------------


def _cohort(model: RiskModel) -> CalibrationCohort:
    info = model.info
    training = model.training
    km = model.cross_validated_km
    groups = km.get("groups", [])
    ticks = tuple(float(t) for t in groups[0]["ticks"]) if groups else ()
    curves = tuple(
        KMCurve(
            group=str(g["label"]).capitalize(),
            times=tuple(map(float, g["times"])),
            survival=tuple(map(float, g["survival"])),
            lower=tuple(map(float, g["lower"])),
            upper=tuple(map(float, g["upper"])),
            at_risk=tuple(int(a) for a in g["at_risk"]),
            n=int(g["n"]),
            events=int(g["events"]),
        )
        for g in groups
    )
    return CalibrationCohort(
        name=str(info.get("cohort", "calibration cohort")),
        n=int(training.get("n", len(model.training_lp))),
        events=int(training.get("events", 0)),
        endpoint=_endpoint(str(info.get("endpoint", "event"))),
        time_unit="years",
        linear_predictors=tuple(float(v) for v in model.training_lp),
        cutoffs=tuple(round(model.percentile(c), 2) for c in model.cutoffs),
        cutoff_source=str(info.get("groups", {}).get("description", "fixed at calibration")),
        km_curves=curves,
        at_risk_times=ticks,
        performance=_metrics(model.performance),
        description=str(training.get("cohort", "")),
        lp_cutoffs=tuple(float(c) for c in model.cutoffs),
    )


def _endpoint(text: str) -> str:
    return "Distant metastasis-free survival" if "metastasis" in text.lower() else text


def _metrics(performance: dict[str, Any]) -> tuple[Metric, ...]:
    metrics = performance.get("metrics", {})
    design = performance.get("design", {})
    tau = design.get("uno_tau_years")
    ibs_times = design.get("ibs_times_years") or []
    ibs_note = f"{min(ibs_times):g}-{max(ibs_times):g} years" if ibs_times else ""
    wanted = (
        ("harrell_c", "Harrell C", ""),
        ("uno_c", "Uno C", f"tau = {tau:.3g} years" if _finite(tau) else ""),
        ("auc_5y", "AUC at 5 years", "cumulative/dynamic"),
        ("auc_10y", "AUC at 10 years", "cumulative/dynamic"),
        ("ibs", "Integrated Brier score", ibs_note),
        ("calibration_slope_10y", "Calibration slope", "at 10 years; 1 is ideal"),
    )
    out = []
    for key, name, note in wanted:
        m = metrics.get(key)
        if isinstance(m, dict) and _finite(m.get("mean")):
            out.append(Metric(name, float(m["mean"]), _opt(m.get("ci_lower")), _opt(m.get("ci_upper")), note))
    return tuple(out)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _opt(value: Any) -> float | None:
    return float(value) if _finite(value) else None


def _risk_result(model: RiskModel, risk: PatientRisk) -> RiskResult:
    horizons = []
    for years, value, ci in ((5.0, risk.risk_5y, risk.risk_5y_ci), (10.0, risk.risk_10y, risk.risk_10y_ci)):
        if value is not None:
            horizons.append(AbsoluteRisk(years, float(value), *(ci if ci is not None else (None, None))))
    lp = risk.linear_predictor
    return RiskResult(
        linear_predictor=lp,
        score=risk.score,
        group_names=tuple(n.capitalize() for n in model.group_names),
        group_index=risk.group_index,
        absolute_risks=tuple(horizons),
        linear_predictor_out_of_range=bool(lp < model.training_lp[0] or lp > model.training_lp[-1]),
    )


def _signature_result(model: RiskModel, risk: PatientRisk, expression: dict[str, float]) -> SignatureResult:
    table = {row["name"]: row for row in model.predictor_table}
    rows = []
    for gene in model.genes:
        z = float(risk.z_scores[gene])
        rows.append(
            GeneRow(
                gene=gene,
                expression=float(expression[gene]),
                z_score=z,
                percentile=float(100.0 * 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))),
                hazard_ratio_per_sd=float(table.get(gene, {}).get("hr_per_sd", 1.0)),
                in_calibration_range=gene not in risk.out_of_range,
            )
        )
    return SignatureResult(
        name=model.signature,
        expression_unit="model units",
        genes=tuple(rows),
        description=(
            f"{len(model.genes)} genes of the {model.signature} signature; z-scores against the calibration "
            "cohort's mean and SD; percentile assumes a normal distribution of each gene in that cohort."
        ),
    )


def _heatmap_genes(model: RiskModel, count: int) -> list[str]:
    """The signature genes with the largest absolute model coefficient (non-zero first)."""
    coefs = dict(zip(model.genes, model.coefficients[: len(model.genes)], strict=True))
    ranked = sorted(model.genes, key=lambda g: (-abs(coefs[g]), g))
    return ranked[:count]


SPATIAL_WINDOWS = (10, 7, 5, 3)  # tiles per window side, largest first (SEQUOIA's spatial mode uses 10)


def _spatial_maps(
    inference: InferenceResult,
    coords: np.ndarray,
    tile_size: float,
    bundle: Bundle,
    genes: list[int],
    device: str,
) -> tuple[np.ndarray, int]:
    """Per-tile maps with the largest window that covers at least half of the tiles.

    SEQUOIA evaluates 10 x 10 windows holding more than 50 tiles. Only the sampled tiles have features, so
    the fill rule is scaled by used / kept tiles; a small biopsy has no such window at all, so smaller
    windows are tried in turn (the statement in the report names the size used).
    """
    ensemble = inference.ensemble or load_bundle_ensemble(bundle, torch.device(device))
    min_fill = 0.5 * len(inference.used_indices) / max(len(inference.kept_indices), 1)
    values = np.full((len(coords), len(genes)), np.nan)
    for window in SPATIAL_WINDOWS:
        values = spatial_expression(
            inference.tile_features,
            coords,
            tile_size,
            ensemble,
            genes,
            window,
            window,
            device=device,
            min_fill=min_fill,
        )
        if np.isfinite(values[:, 0]).mean() >= 0.5:
            return values, window
    return values, SPATIAL_WINDOWS[-1]


def _images(
    request: ScoreRequest,
    inference: InferenceResult,
    bundle: Bundle,
    genes: Sequence[str],
    gene_index: dict[str, int],
    settings: Settings,
) -> SlideImages:
    grid = inference.grid
    coords = grid.coords[inference.used_indices]
    tile_size = float(grid.read_px * grid.level_downsample)
    with open_slide(request.slide, mpp=request.mpp) as slide:
        thumbnail = slide.thumbnail(THUMBNAIL_PX)
    values, window = _spatial_maps(
        inference, coords, tile_size, bundle, [gene_index[g] for g in genes], settings.device
    )
    heatmaps = tuple(TileHeatmap(g, values[:, k].astype(np.float32)) for k, g in enumerate(genes))
    return SlideImages(
        thumbnail=thumbnail,
        tissue_mask=inference.mask.mask,
        tile_coords=coords.astype(np.int64),
        tile_size=int(round(tile_size)),
        heatmaps=heatmaps,
        heatmap_statement=(
            f"Per-tile predicted expression: the model applied to non-overlapping windows of {window} x {window} "
            "tiles (tile features as tokens, as in SEQUOIA's spatial mode); each tile shows its window's "
            "value, not a measurement of the tile itself. Blank: no window with enough tissue."
        ),
    )


def calibration_warning(model: RiskModel) -> str | None:
    """A warning unless the risk model says it was calibrated on slide-predicted expression."""
    source = str(model.info.get("expression_source", "unknown"))
    if source == "predicted":
        return None
    what = "measured" if source == "measured" else "an unstated kind of"
    return (
        f"The risk model was calibrated on {what} expression, not on expression predicted from slides: its "
        "risks for this slide are not valid until it is re-calibrated on predicted expression "
        "(sequoia-clinic calibrate)."
    )


def _qc(inference: InferenceResult, risk: PatientRisk, model: RiskModel) -> QualityControl:
    info = inference.slide_info
    width, height = info.level_dimensions[0]
    area_mm2 = inference.mask.tissue_fraction * width * height * info.mpp[0] * info.mpp[1] / 1e6
    # The report adds its own per-gene and LP range warnings; the model's other flags (scale mismatch,
    # horizons beyond follow-up) are kept.
    own = ("inputs outside the calibration range", "(extrapolation)")
    flags = [f for f in risk.flags if not f.endswith(own)]
    return QualityControl(
        tissue_area_mm2=round(float(area_mm2), 2),
        tissue_fraction=round(float(inference.mask.tissue_fraction), 4),
        tiles_kept=int(len(inference.kept_indices)),
        tiles_used=int(len(inference.used_indices)),
        warnings=tuple(
            dict.fromkeys(
                # the report states an untrained bundle itself (bundle_trained in Provenance)
                w
                for w in (calibration_warning(model), *inference.qc_warnings, *flags)
                if w and not (not inference.bundle_trained and "NOT trained" in w)
            )
        ),
    )


def _slide_record(request: ScoreRequest, inference: InferenceResult) -> SlideInfo:
    info = inference.slide_info
    width, height = info.level_dimensions[0]
    return SlideInfo(
        path=str(request.slide),
        sha256=inference.slide_sha256,
        format=info.format,
        width_px=int(width),
        height_px=int(height),
        mpp=float(info.mpp[0]),
        mpp_source=MPP_SOURCES.get(info.mpp_source, info.mpp_source),
    )


# ---- the run ----------------------------------------------------------------------------------------------


def score_slide(
    request: ScoreRequest,
    settings: Settings,
    progress: Any = None,
    on_stage: StageCallback | None = None,
    now: dt.datetime | None = None,
) -> ScoreOutcome:
    """Run every stage for one slide and write the requested outputs atomically into ``request.out_dir``."""
    check_patient_options(request.patient)
    check_output_dir(request.out_dir)
    stage = on_stage or (lambda name: None)
    now = now or dt.datetime.now(dt.UTC)
    timings: dict[str, float] = {}

    stage("Loading the model bundle and the risk model")
    t0 = time.perf_counter()
    bundle = load_bundle(request.bundle, settings)
    model_path = resolve_risk_model_path(request, bundle)
    model = RiskModel.load(model_path)
    gene_index = _check_genes(model, bundle, model_path)
    timings["load_models"] = time.perf_counter() - t0

    stage("Reading the slide and predicting expression")
    inference = run_inference(request.slide, bundle, settings, mpp=request.mpp, progress=progress)
    timings.update({f"inference.{k}": v for k, v in inference.timings.items()})

    stage("Computing the signature risk")
    t0 = time.perf_counter()
    expression = {g: float(inference.expression[gene_index[g]]) for g in model.genes}
    risk = model.apply(expression)
    timings["risk"] = time.perf_counter() - t0

    stage("Mapping expression over the tissue")
    t0 = time.perf_counter()
    genes = _heatmap_genes(model, settings.report.heatmap_genes)
    images = _images(request, inference, bundle, genes, gene_index, settings)
    timings["spatial_maps"] = time.perf_counter() - t0

    stage("Writing the report")
    t0 = time.perf_counter()
    patient, study = _patient_and_study(request, inference.slide_info.format, inference.slide_info.metadata)
    model_sha = sha256_file(model_path)
    created = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    data = ReportData(
        patient=patient,
        report_id=make_report_id(inference.slide_sha256, bundle.manifest_sha256, model_sha, __version__),
        report_date=created[:10],
        created=created,
        slide=_slide_record(request, inference),
        qc=_qc(inference, risk, model),
        risk=_risk_result(model, risk),
        cohort=_cohort(model),
        signature=_signature_result(model, risk, expression),
        provenance=Provenance(
            software_version=__version__,
            bundle_name=bundle.name,
            bundle_version=bundle.version,
            bundle_sha256=bundle.manifest_sha256,
            bundle_trained=bundle.trained,
            risk_model_name=model_path.stem,
            risk_model_sha256=model_sha,
            encoder=inference.encoder_name,
            device=inference.device,
            precision=str(inference.settings_used["precision"]),
        ),
        images=images,
        timings={},
        demo=not bundle.trained,
    )
    if request.deidentify:
        key = pseudonym_key(settings.report.pseudonym_key)
        data = deidentify_report(data, key)
        study = deidentify_study(study, key)
    timings["report"] = time.perf_counter() - t0
    data = replace(data, timings={k: round(v, 3) for k, v in timings.items()})
    files = _write_outputs(request, data, study, settings)
    return ScoreOutcome(request.out_dir, files, data, risk, inference)


def _write_outputs(
    request: ScoreRequest, data: ReportData, study: StudyInfo | None, settings: Settings
) -> tuple[Path, ...]:
    text = load_report_text(settings.report.templates_dir)
    document = result_dict(data, text)
    pdf = render_report_pdf_bytes(data, settings.report, text)
    names = []
    with atomic_dir(request.out_dir) as tmp:
        if "pdf" in request.formats:
            (tmp / "report.pdf").write_bytes(pdf)
            names.append("report.pdf")
        if "json" in request.formats:
            write_json_atomic(tmp / "result.json", document)
            names.append("result.json")
        if "dicom" in request.formats:
            write_encapsulated_pdf(pdf, tmp / "report.dcm", data.patient, study)
            names.append("report.dcm")
    return tuple(request.out_dir / n for n in names)
