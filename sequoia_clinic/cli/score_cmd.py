"""``sequoia-clinic score SLIDE``: one slide → ``report.pdf``, ``result.json`` and optionally ``report.dcm``.

Patient and specimen fields come from the DICOM slide's attributes when present, else from the options;
options override. ``--deidentify`` replaces identifying fields in every output with pseudonyms (HMAC
under ``--pseudonym-key`` / ``SEQUOIA_CLINIC_PSEUDONYM_KEY``; a random key per run when neither is set).
Progress is a rich display per stage on a terminal, plain stage lines otherwise or with ``--quiet``.
Exit codes: 0 success, 2 user-caused error (one line, nothing written).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from sequoia_clinic.cli.common import PRECISION_HELP, check_device, stderr_console, user_errors
from sequoia_clinic.cli.predict_cmd import default_cache_dir
from sequoia_clinic.errors import OptionError
from sequoia_clinic.settings import ModelSettings, ReportSettings, Settings

# sequoia_clinic.pipeline.score and sequoia_clinic.encoders (torch, timm, sksurv) are imported inside the
# functions that use them, not here, so `sequoia-clinic --help` and the other commands start fast.
if TYPE_CHECKING:
    from sequoia_clinic.pipeline.score import ScoreOutcome, ScoreRequest


def build_settings(
    device: str,
    quiet: bool,
    max_tiles: int | None,
    cache_dir: Path | None,
    no_cache: bool,
    models_dir: Path | None,
    encoder_weights: Path | None,
    pseudonym_key: str | None,
    precision: str = "auto",
) -> Settings:
    """The one frozen settings object for a score run, from the command-line options."""
    check_device(device, precision)
    base = Settings()
    return dataclasses.replace(
        base,
        device=device,
        precision=precision,
        quiet=quiet,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
        features=dataclasses.replace(base.features, max_tiles=max_tiles),  # None = the bundle's cap
        models=ModelSettings(models_dir=models_dir, encoder_weights=encoder_weights),
        report=dataclasses.replace(ReportSettings(), pseudonym_key=pseudonym_key),
    )


def run_score(request: ScoreRequest, settings: Settings, quiet: bool) -> ScoreOutcome:
    """Run :func:`score_slide` with a progress display (terminal) or plain stage lines (logs)."""
    from sequoia_clinic.encoders import make_progress
    from sequoia_clinic.pipeline.score import score_slide

    console = stderr_console()
    interactive = not quiet and sys.stderr.isatty()

    def on_stage(name: str) -> None:
        if not quiet:
            console.print(f"[bold]›[/bold] {name}" if interactive else f"stage: {name}")

    progress = make_progress(not interactive, console)
    if progress is None:
        return score_slide(request, settings, on_stage=on_stage)
    with progress:
        return score_slide(request, settings, progress=progress, on_stage=on_stage)


def print_outcome(outcome: ScoreOutcome, quiet: bool) -> None:
    """A short summary on stdout: group, score, absolute risks, files (no patient identifiers)."""
    out = Console(highlight=False)
    data = outcome.report
    risk = data.risk
    if not quiet:
        if data.demo:
            out.print("[bold red]DEMONSTRATION — NOT FOR CLINICAL USE (untrained demo model)[/bold red]")
        out.print(f"risk group  {risk.group_names[risk.group_index]} (score {risk.score:.0f} of 100)")
        for horizon in risk.absolute_risks:
            ci = f" (95% CI {horizon.lower:.1%}–{horizon.upper:.1%})" if horizon.lower is not None else ""
            out.print(f"risk {horizon.horizon:g} y   {horizon.risk:.1%}{ci}")
        out.print(f"tiles       {data.qc.tiles_used} used of {data.qc.tiles_kept} kept")
        for warning in data.qc.warnings:
            out.print(f"[yellow]QC warning: {warning}[/yellow]")
    for path in outcome.files:
        out.print(f"wrote       {path}")


def register(app: typer.Typer) -> None:
    @app.command("score")
    @user_errors
    def score(
        slide: Path = typer.Argument(
            ..., help="Slide: .svs/.tif file, DICOM WSI folder or one of its .dcm files."
        ),
        bundle: str = typer.Option("sequoia-brca-demo", "--bundle", help="Model bundle name or folder."),
        risk_model: Path | None = typer.Option(
            None, "--risk-model", help="Risk model JSON (default: models/risk/gse7390-wang76.json)."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Output folder (default ./<slide-stem>-report/)."
        ),
        mpp: float | None = typer.Option(None, "--mpp", help="Override the slide's pixel size (um/px)."),
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
        formats: str = typer.Option("pdf,json", "--format", help="Comma-separated: pdf, json, dicom."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
        max_tiles: int | None = typer.Option(
            None, "--max-tiles", min=1, help="Tile cap (default: the bundle's, 4000 for SEQUOIA)."
        ),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Feature cache folder."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the feature cache."),
        models_dir: Path | None = typer.Option(
            None, "--models-dir", envvar="SEQUOIA_CLINIC_MODELS", help="Extra folder of bundles."
        ),
        encoder_weights: Path | None = typer.Option(
            None,
            "--encoder-weights",
            envvar="SEQUOIA_CLINIC_ENCODER_WEIGHTS",
            help="Local encoder weights instead of the bundle's copy (sha256 must still match).",
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Score one slide and write the patient report (research use only)."""
        from sequoia_clinic.pipeline.score import PatientOptions, ScoreRequest, default_out_dir, parse_formats

        if risk_model is not None and not risk_model.is_file():
            raise OptionError(
                "risk model file not found", path=risk_model, fix="Pass an existing --risk-model JSON."
            )
        settings = build_settings(
            device,
            quiet,
            max_tiles,
            cache_dir,
            no_cache,
            models_dir,
            encoder_weights,
            pseudonym_key,
            precision,
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
        print_outcome(run_score(request, settings, quiet), quiet)
