"""score: one slide → risk, report records and the files ``report.pdf``, ``result.json``, ``report.dcm``.

The flow, each step owned by a stage or a sibling module:

    bundles + survival (load the bundle, its folds and the risk model; check the genes fit)
    → pipeline.predict (slide opened once: hash, tissue, tiles, encoder, clusters, folds, thumbnail)
    → pipeline.clinical (specimen adequacy, intended population, the model's clinical covariates)
    → survival (Cox risk on the signature genes + covariates) → pipeline.repeatability (seeds re-run)
    → aggregator.spatial (per-tile maps)
    → pipeline.report_records + pipeline.patient (report records) → report.files (written atomically)

:func:`score_slide` is a pure function of its request and settings apart from the clock (``created`` and
the timings), so two runs on the same slide give the same ``result.json`` modulo those keys. The request
is checked (patient options, output folder, the slide opened) before any work; outputs are moved into place
only when every file succeeded.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sequoia_clinic import __version__
from sequoia_clinic.aggregator.ensemble import FoldEnsemble
from sequoia_clinic.aggregator.spatial import sampled_tile_maps
from sequoia_clinic.bundles.manifest import Bundle
from sequoia_clinic.bundles.reliability import read_reliability
from sequoia_clinic.bundles.store import load_bundle
from sequoia_clinic.clinical_choices import SpecimenType
from sequoia_clinic.errors import RiskModelError
from sequoia_clinic.fileio import check_output_dir, sha256_file
from sequoia_clinic.locations import default_risk_model
from sequoia_clinic.pipeline.clinical import (
    Adequacy,
    AdequacyRequest,
    adequacy_rule,
    check_adequacy,
    model_covariates,
    population_warnings,
)
from sequoia_clinic.pipeline.patient import PatientOptions, check_patient_options, patient_and_study
from sequoia_clinic.pipeline.predict import (
    DEFAULT_BUNDLE,
    Prediction,
    PredictRequest,
    load_folds,
    open_request_slide,
    run_prediction,
)
from sequoia_clinic.pipeline.repeatability import repeatability
from sequoia_clinic.pipeline.report_records import (
    clinical_summary,
    cohort_record,
    heatmap_genes,
    quality_control,
    repeatability_result,
    risk_result,
    signature_result,
    slide_record,
    tissue_area_mm2,
)
from sequoia_clinic.progress import ProgressLike
from sequoia_clinic.qc import QCWarning
from sequoia_clinic.report.deidentify import deidentify_report, deidentify_study, pseudonym_key
from sequoia_clinic.report.files import OutputFormat, write_report_files
from sequoia_clinic.report.model import Provenance, ReportData, SlideImages, TileHeatmap, make_report_id
from sequoia_clinic.settings import Settings
from sequoia_clinic.slides.base import Slide
from sequoia_clinic.survival.clinical import ClinicalInputs
from sequoia_clinic.survival.model import PatientRisk, RiskModel
from sequoia_clinic.survival.tripod import tripod_items

DEFAULT_RISK_MODEL = default_risk_model()  # shipped in the package (sequoia_clinic/locations.py)
THUMBNAIL_PX = 1024
StageCallback = Callable[[str], None]


@dataclass(frozen=True)
class ScoreRequest:
    """What to score and where to write it."""

    slide: Path
    out_dir: Path
    bundle: str | Path = DEFAULT_BUNDLE
    risk_model: Path | None = None  # None: the shipped default (gse7390-wang76)
    mpp: float | None = None
    patient: PatientOptions = field(default_factory=PatientOptions)
    deidentify: bool = False
    formats: tuple[OutputFormat, ...] = (OutputFormat.PDF, OutputFormat.JSON)
    clinical: ClinicalInputs = field(default_factory=ClinicalInputs)  # --age, --er, ... or a patient JSON
    specimen_type: SpecimenType | None = None
    strict_population: bool = False  # refuse (not flag) a patient outside the model's population
    allow_inadequate: bool = False  # report (with a flag) a slide below the adequacy minimums
    # None: no adequacy gate; else the user's minimums over the bundle's declared ones (the CLI always gates)
    adequacy: AdequacyRequest | None = None
    repeats: int = 0  # repeatability repeats (0: none; the CLI's default is pipeline.repeatability's 10)


@dataclass(frozen=True)
class ScoreOutcome:
    """What a run produced: the files written and the records behind them."""

    out_dir: Path
    files: tuple[Path, ...]
    report: ReportData
    risk: PatientRisk
    prediction: Prediction


def default_out_dir(slide: Path) -> Path:
    """``./<slide-stem>-report/`` (a DICOM folder ``X.dicom`` gives ``X-report``)."""
    return Path.cwd() / f"{Path(slide).stem}-report"


def _gene_index(model: RiskModel, bundle: Bundle, path: Path) -> dict[str, int]:
    """Output row of each gene of the bundle; refuses a risk model needing genes the bundle lacks."""
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


def _images(
    prediction: Prediction,
    ensemble: FoldEnsemble,
    genes: list[str],
    gene_index: dict[str, int],
) -> SlideImages:
    grid = prediction.grid
    tile_size = float(grid.read_px * grid.level_downsample)
    assert prediction.thumbnail is not None  # score always asks run_prediction for one
    values, window = sampled_tile_maps(
        prediction.tile_features,
        prediction.tile_coords,
        tile_size,
        ensemble,
        [gene_index[g] for g in genes],
        sampled_share=len(prediction.used_indices) / max(len(prediction.kept_indices), 1),
    )
    heatmaps = tuple(TileHeatmap(g, values[:, k].astype(np.float32)) for k, g in enumerate(genes))
    return SlideImages(
        thumbnail=prediction.thumbnail,
        tissue_mask=prediction.mask.mask,
        tile_coords=prediction.tile_coords.astype(np.int64),
        tile_size=int(round(tile_size)),
        heatmaps=heatmaps,
        heatmap_statement=(
            f"Per-tile predicted expression: the model applied to non-overlapping windows of {window} x {window} "
            "tiles (tile features as tokens, as in SEQUOIA's spatial mode); each tile shows its window's "
            "value, not a measurement of the tile itself. Blank: no window with enough tissue."
        ),
    )


def score_slide(
    request: ScoreRequest,
    settings: Settings,
    progress: ProgressLike = None,
    on_stage: StageCallback | None = None,
    now: dt.datetime | None = None,
) -> ScoreOutcome:
    """Run every stage for one slide and write the requested outputs atomically into ``request.out_dir``.

    The request and the slide (path, format, resource budget: it is opened here, once) are checked before
    the first stage is announced, so a refused slide gives its one error and nothing else.
    """
    started = time.perf_counter()
    check_patient_options(request.patient)
    check_output_dir(request.out_dir)
    predict = PredictRequest(request.slide, request.bundle, request.mpp, thumbnail_px=THUMBNAIL_PX)
    with open_request_slide(predict) as slide:
        return _score_opened(request, predict, slide, settings, progress, on_stage, now, started)


def _score_opened(
    request: ScoreRequest,
    predict: PredictRequest,
    slide: Slide,
    settings: Settings,
    progress: ProgressLike,
    on_stage: StageCallback | None,
    now: dt.datetime | None,
    started: float,
) -> ScoreOutcome:
    """:func:`score_slide` once its slide is open (closed by the caller)."""
    stage = on_stage or (lambda name: None)
    now = now or dt.datetime.now(dt.UTC)
    timings: dict[str, float] = {}

    stage("Loading the model bundle and the risk model")
    t0 = time.perf_counter()
    bundle = load_bundle(request.bundle, settings)
    model_path = Path(request.risk_model) if request.risk_model is not None else DEFAULT_RISK_MODEL
    model = RiskModel.load(model_path)
    gene_index = _gene_index(model, bundle, model_path)
    covariates = model_covariates(model, request.clinical)  # refuses a covariate not given, before work
    population = population_warnings(
        model, request.clinical, request.specimen_type, request.strict_population
    )
    ensemble = load_folds(bundle, settings)  # verified before the long tile encoding
    timings["load_models"] = time.perf_counter() - t0

    stage("Reading the slide and predicting expression")
    prediction = run_prediction(predict, bundle, ensemble, settings, progress, opened=slide)
    # the prediction's own total is the parent of its parts: recorded once, as "inference"
    timings["inference"] = prediction.timings["total"]
    timings.update({f"inference.{k}": v for k, v in prediction.timings.items() if k != "total"})

    stage("Checking the specimen and computing the risk")
    t0 = time.perf_counter()
    adequacy: tuple[QCWarning, ...] = ()
    if request.adequacy is not None:
        rule = adequacy_rule(bundle.adequacy, request.adequacy)
        measured = Adequacy(rule, tissue_area_mm2(prediction), len(prediction.kept_indices))
        adequacy = check_adequacy(measured, request.allow_inadequate)
    expression = {g: float(prediction.expression[gene_index[g]]) for g in model.genes}
    risk = model.apply(expression, covariates)
    risk = replace(risk, flags=[*adequacy, *population, *risk.flags])
    timings["risk"] = time.perf_counter() - t0

    repeat = None
    if request.repeats > 0:
        stage("Repeating the stochastic steps")
        t0 = time.perf_counter()
        repeat = repeatability(prediction, ensemble, model, gene_index, covariates, risk, request.repeats)
        unstable = repeat.warning()
        if unstable is not None:
            risk = replace(risk, flags=[*risk.flags, unstable])
        timings["repeatability"] = time.perf_counter() - t0

    stage("Mapping expression over the tissue")
    t0 = time.perf_counter()
    genes = heatmap_genes(model, settings.report.heatmap_genes)
    images = _images(prediction, ensemble, genes, gene_index)
    timings["spatial_maps"] = time.perf_counter() - t0

    stage("Writing the report")
    t0 = time.perf_counter()
    info = prediction.slide_info
    patient, study = patient_and_study(info.metadata, info.format == "dicom", request.patient)
    model_sha = sha256_file(model_path)
    created = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    data = ReportData(
        patient=patient,
        report_id=make_report_id(prediction.slide_sha256, bundle.manifest_sha256, model_sha, __version__),
        report_date=created[:10],
        created=created,
        slide=slide_record(request.slide, prediction),
        qc=quality_control(prediction, risk, model),
        risk=risk_result(model, risk),
        cohort=cohort_record(model),
        signature=signature_result(model, risk, expression, read_reliability(bundle)),
        provenance=Provenance(
            software_version=__version__,
            bundle_name=bundle.name,
            bundle_version=bundle.version,
            bundle_sha256=bundle.manifest_sha256,
            bundle_trained=bundle.trained,
            risk_model_name=model_path.stem,
            risk_model_sha256=model_sha,
            encoder=prediction.encoder_name,
            device=prediction.device,
            precision=prediction.settings_used.precision,
        ),
        images=images,
        timings={},
        demo=not bundle.trained,
        clinical=clinical_summary(model, risk, request.clinical, request.specimen_type),
        repeatability=repeatability_result(repeat),
        model_card=tuple((i.number, i.topic, i.text) for i in tripod_items(model)),
    )
    if request.deidentify:
        key = pseudonym_key(settings.report.pseudonym_key)
        data = deidentify_report(data, key)
        study = deidentify_study(study, key)
    timings["report"] = time.perf_counter() - t0
    data = replace(data, timings={k: round(v, 3) for k, v in timings.items()})
    files = write_report_files(request.out_dir, data, study, request.formats, settings.report, started)
    return ScoreOutcome(request.out_dir, files, data, risk, prediction)
