"""``sequoia-clinic demo``: score the bundled real slide with the demo bundle and the default risk model.

The slide is OpenSlide's CMU-1-Small-Region (CC0; see sequoia_clinic/demo/ATTRIBUTION.md). The demo
bundle is untrained, so every page of the report carries a DEMONSTRATION banner.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.score_cmd import build_settings, print_outcome, run_score

# sequoia_clinic.pipeline.score (torch, timm, sksurv) is imported inside the functions that use it, not here,
# so `sequoia-clinic --help` and the other commands start fast.
if TYPE_CHECKING:
    from sequoia_clinic.pipeline.score import PatientOptions

DEMO_SLIDE = Path(__file__).resolve().parents[1] / "demo" / "CMU-1-Small-Region.svs"
DEMO_PATIENT_FIELDS = {
    "name": "Demo, Patient",
    "patient_id": "DEMO-0001",
    "sex": "F",
    "accession": "DEMO-ACC-1",
    "specimen": "CMU-1 small region (skin; public CC0 demo slide)",
}


def demo_patient() -> PatientOptions:
    """The fictitious patient and specimen printed on the demo report."""
    from sequoia_clinic.pipeline.score import PatientOptions

    return PatientOptions(**DEMO_PATIENT_FIELDS)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @user_errors
    def demo(
        out: Path = typer.Option(Path("demo-report"), "--out", help="Output folder."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Score the bundled demo slide and print where the report is."""
        from sequoia_clinic.pipeline.score import ScoreRequest

        settings = build_settings("cpu", quiet, None, None, True, None, None, None)
        request = ScoreRequest(
            slide=DEMO_SLIDE,
            out_dir=out,
            patient=demo_patient(),
            formats=("pdf", "json", "dicom"),
        )
        outcome = run_score(request, settings, quiet)
        print_outcome(outcome, quiet)
        typer.echo(f"Demo report: {(outcome.out_dir / 'report.pdf').resolve()}")
