"""``sequoia-clinic demo``: score the bundled real slide with the demo bundle and the default risk model.

The slide is OpenSlide's CMU-1-Small-Region (CC0; see sequoia_clinic/demo/ATTRIBUTION.md). The demo
bundle is untrained, so every page of the report carries a DEMONSTRATION banner.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.score_cmd import build_settings, print_outcome, run_score
from sequoia_clinic.scoring import PatientOptions, ScoreRequest

DEMO_SLIDE = Path(__file__).resolve().parents[1] / "demo" / "CMU-1-Small-Region.svs"
DEMO_PATIENT = PatientOptions(
    name="Demo, Patient",
    patient_id="DEMO-0001",
    sex="F",
    accession="DEMO-ACC-1",
    specimen="CMU-1 small region (skin; public CC0 demo slide)",
)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @user_errors
    def demo(
        out: Path = typer.Option(Path("demo-report"), "--out", help="Output folder."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Score the bundled demo slide and print where the report is."""
        settings = build_settings("cpu", quiet, None, None, True, None, None, None)
        request = ScoreRequest(
            slide=DEMO_SLIDE,
            out_dir=out,
            patient=DEMO_PATIENT,
            formats=("pdf", "json", "dicom"),
        )
        outcome = run_score(request, settings, quiet)
        print_outcome(outcome, quiet)
        typer.echo(f"Demo report: {(outcome.out_dir / 'report.pdf').resolve()}")
