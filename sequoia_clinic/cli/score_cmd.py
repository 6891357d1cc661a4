"""``sequoia-clinic score SLIDE``: one slide → ``report.pdf``, ``result.json`` and optionally ``report.dcm``.

Parses the options, calls :func:`sequoia_clinic.pipeline.score.score_slide` and prints a summary.
Patient and specimen fields come from the DICOM slide's attributes when present, else from the options;
options override. ``--deidentify`` replaces identifying fields in every output with pseudonyms (HMAC
under ``--pseudonym-key`` / ``SEQUOIA_CLINIC_PSEUDONYM_KEY``; a random key per run when neither is set).
Clinical values (``--age`` ... ``--menopause`` or ``--clinical`` JSON) feed a clinico-genomic risk model and
the intended-population check (``--strict-population`` refuses instead of flagging); the slide must meet
``--min-tissue-mm2`` / ``--min-tiles`` unless ``--allow-inadequate``; ``--repeats`` sets the repeatability runs.
Progress is a rich display per stage on a terminal, plain stage lines otherwise, nothing with ``--quiet``.
Exit codes: 0 success, 2 user-caused error (one line, nothing written), 1 internal error (a bug).
"""

from __future__ import annotations

from pathlib import Path

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import (
    DEFAULT_BUNDLE,
    BundleOpt,
    CacheDirOpt,
    Device,
    DeviceOpt,
    EncoderWeightsOpt,
    FormatsOpt,
    MaxTilesOpt,
    ModelsDirOpt,
    MppOpt,
    NoCacheOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    ReportDirOpt,
    SlideArg,
    TileOrderOpt,
    build_settings,
    parse_formats,
)
from sequoia_clinic.cli.output import print_score_outcome, stage_display
from sequoia_clinic.clinical_choices import Grade, Menopause, ReceptorStatus, SpecimenType

# sequoia_clinic.pipeline (torch, timm, sksurv) is imported inside the command, not here, so
# `sequoia-clinic --help` and the other commands start fast.


def register(app: typer.Typer) -> None:
    @app.command("score")
    @user_errors
    def score(
        slide: SlideArg,
        bundle: BundleOpt = DEFAULT_BUNDLE,
        risk_model: Path | None = typer.Option(
            None,
            "--risk-model",
            exists=True,
            dir_okay=False,
            help="Risk model JSON (default: models/risk/gse7390-wang76.json).",
        ),
        out: ReportDirOpt = None,
        mpp: MppOpt = None,
        patient_id: str | None = typer.Option(None, "--patient-id", help="Patient ID for the report."),
        patient_name: str | None = typer.Option(
            None, "--patient-name", help="Patient name, e.g. 'Doe, Jane'."
        ),
        birth_date: str | None = typer.Option(None, "--birth-date", help="Birth date, YYYY-MM-DD."),
        sex: str | None = typer.Option(None, "--sex", help="F, M or O."),
        accession: str | None = typer.Option(None, "--accession", help="Accession number."),
        specimen: str | None = typer.Option(None, "--specimen", help="Specimen description."),
        deidentify: bool = typer.Option(
            False, "--deidentify", help="Pseudonymise identifiers in every output."
        ),
        pseudonym_key: str | None = typer.Option(
            None,
            "--pseudonym-key",
            envvar="SEQUOIA_CLINIC_PSEUDONYM_KEY",
            help="Secret for stable pseudonyms.",
        ),
        formats: FormatsOpt = "pdf,json",
        device: DeviceOpt = Device.CPU,
        precision: PrecisionOpt = Precision.AUTO,
        max_tiles: MaxTilesOpt = None,
        tile_order: TileOrderOpt = None,
        cache_dir: CacheDirOpt = None,
        no_cache: NoCacheOpt = False,
        models_dir: ModelsDirOpt = None,
        encoder_weights: EncoderWeightsOpt = None,
        quiet: QuietOpt = False,
        age: float | None = typer.Option(None, "--age", min=0, max=120, help="Age at diagnosis, years."),
        tumour_size: float | None = typer.Option(
            None, "--tumour-size", min=0, max=30, help="Invasive tumour size, cm."
        ),
        grade: Grade | None = typer.Option(None, "--grade", help="Histological grade."),
        er: ReceptorStatus | None = typer.Option(None, "--er", help="Oestrogen-receptor status."),
        her2: ReceptorStatus | None = typer.Option(None, "--her2", help="HER2 status."),
        nodes: int | None = typer.Option(
            None, "--nodes", min=0, max=100, help="Number of positive lymph nodes."
        ),
        menopause: Menopause | None = typer.Option(None, "--menopause", help="Menopausal status."),
        clinical: Path | None = typer.Option(
            None,
            "--clinical",
            exists=True,
            dir_okay=False,
            help='Patient JSON of clinical values, e.g. {"age": 52, "tumour_size": 2.1, "grade": 2, "er": '
            '"positive", "nodes": 0}; options given override it.',
        ),
        specimen_type: SpecimenType | None = typer.Option(
            None,
            "--specimen-type",
            help="What the slide is; flagged when the risk model was not developed on it.",
        ),
        strict_population: bool = typer.Option(
            False,
            "--strict-population",
            help="Refuse a patient outside the risk model's intended population.",
        ),
        allow_inadequate: bool = typer.Option(
            False,
            "--allow-inadequate",
            help="Report a slide below the minimum tissue area / kept tiles (with a flag on page 1) instead of "
            "refusing it.",
        ),
        min_tissue_mm2: float | None = typer.Option(
            None,
            "--min-tissue-mm2",
            min=0,
            help="Minimum tissue area (default: the bundle's declared minimum, else 4 mm², Prosigna's minimum "
            "tumour area).",
        ),
        min_tiles: int | None = typer.Option(
            None,
            "--min-tiles",
            min=0,
            help="Minimum kept tiles (default: the bundle's declared minimum, else 100 = SEQUOIA's cluster tokens).",
        ),
        repeats: int = typer.Option(
            10,
            "--repeats",
            min=0,
            max=100,
            help="Repeatability: re-runs of the k-means / tile-sample seeds (0: none).",
        ),
    ) -> None:
        """Score one slide and write the patient report (research use only)."""
        from sequoia_clinic.pipeline.clinical import AdequacyRequest
        from sequoia_clinic.pipeline.patient import PatientOptions
        from sequoia_clinic.pipeline.score import ScoreRequest, default_out_dir, score_slide
        from sequoia_clinic.survival.clinical import clinical_inputs

        inputs = clinical_inputs(
            clinical,
            age=age,
            tumour_size_cm=tumour_size,
            grade=None if grade is None else int(grade.value),
            er=None if er is None else er.value,
            her2=None if her2 is None else her2.value,
            nodes=nodes,
            menopause=None if menopause is None else menopause.value,
        )

        settings = build_settings(
            device=device,
            precision=precision,
            max_tiles=max_tiles,
            tile_order=tile_order,
            cache_dir=cache_dir,
            no_cache=no_cache,
            models_dir=models_dir,
            encoder_weights=encoder_weights,
            pseudonym_key=pseudonym_key,
        )
        request = ScoreRequest(
            slide=slide,
            out_dir=out or default_out_dir(slide),
            bundle=bundle,
            risk_model=risk_model,
            mpp=mpp,
            patient=PatientOptions(patient_name, patient_id, birth_date, sex, accession, specimen),
            deidentify=deidentify,
            formats=parse_formats(formats),
            clinical=inputs,
            specimen_type=specimen_type,
            strict_population=strict_population,
            allow_inadequate=allow_inadequate,
            adequacy=AdequacyRequest(min_tissue_mm2, min_tiles),
            repeats=repeats,
        )
        with stage_display(quiet) as (progress, on_stage):
            outcome = score_slide(request, settings, progress, on_stage)
        print_score_outcome(outcome, quiet)
