"""``sequoia-clinic demo``: score the bundled real slide with the demo bundle and the default risk model.

The slide is OpenSlide's CMU-1-Small-Region (CC0; see sequoia_clinic/demo/ATTRIBUTION.md), the patient
is fictitious. The demo bundle is untrained, so every page of the report carries a DEMONSTRATION banner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import QuietOpt, build_settings
from sequoia_clinic.cli.output import print_score_outcome, stage_display
from sequoia_clinic.locations import demo_slide

# sequoia_clinic.pipeline (torch, timm, sksurv) is imported inside the command, not here, so
# `sequoia-clinic --help` and the other commands start fast.


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @user_errors
    def demo(
        out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-report"),
        quiet: QuietOpt = False,
    ) -> None:
        """Score the bundled demo slide and print where the report is."""
        from sequoia_clinic.pipeline.patient import PatientOptions
        from sequoia_clinic.pipeline.score import ScoreRequest, score_slide
        from sequoia_clinic.report.files import OutputFormat

        request = ScoreRequest(
            slide=demo_slide(),
            out_dir=out,
            patient=PatientOptions(
                name="Demo, Patient",
                patient_id="DEMO-0001",
                sex="F",
                accession="DEMO-ACC-1",
                specimen="CMU-1 small region (skin; public CC0 demo slide)",
            ),
            formats=tuple(OutputFormat),
        )
        with stage_display(quiet) as (progress, on_stage):
            outcome = score_slide(request, build_settings(no_cache=True), progress, on_stage)
        print_score_outcome(outcome, quiet)
        typer.echo(f"Demo report: {(outcome.out_dir / 'report.pdf').resolve()}")
