"""``sequoia-clinic score SLIDE``: one slide → ``report.pdf``, ``result.json`` and optionally ``report.dcm``.

Parses the options, calls :func:`sequoia_clinic.pipeline.score.score_slide` and prints a summary.
Patient and specimen fields come from the DICOM slide's attributes when present, else from the options;
options override. ``--deidentify`` replaces identifying fields in every output with pseudonyms (HMAC
under ``--pseudonym-key`` / ``SEQUOIA_CLINIC_PSEUDONYM_KEY``; a random key per run when neither is set).
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
    build_settings,
    parse_formats,
)
from sequoia_clinic.cli.output import print_score_outcome, stage_display

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
        cache_dir: CacheDirOpt = None,
        no_cache: NoCacheOpt = False,
        models_dir: ModelsDirOpt = None,
        encoder_weights: EncoderWeightsOpt = None,
        quiet: QuietOpt = False,
    ) -> None:
        """Score one slide and write the patient report (research use only)."""
        from sequoia_clinic.pipeline.patient import PatientOptions
        from sequoia_clinic.pipeline.score import ScoreRequest, default_out_dir, score_slide

        settings = build_settings(
            device=device,
            precision=precision,
            max_tiles=max_tiles,
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
        )
        with stage_display(quiet) as (progress, on_stage):
            outcome = score_slide(request, settings, progress, on_stage)
        print_score_outcome(outcome, quiet)
