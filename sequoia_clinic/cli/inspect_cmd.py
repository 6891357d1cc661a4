"""``sequoia-clinic inspect SLIDE``: what a slide is and how many 20x tissue tiles it yields.

Parses the options, calls :func:`sequoia_clinic.pipeline.inspect.inspect_slide` and prints its result as
text or (``--json``) as one JSON object with the keys documented there. Patient metadata is never printed.
The QC notes about the slide's pixels (a converted pixel format, damaged stored tiles) are printed as
``QC warning:`` lines, with the messages ``score`` and ``predict`` give, and are ``qc_warnings`` in JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import JsonOpt, MppOpt, SlideArg, build_settings


def _human(report: dict[str, Any]) -> str:
    tiles = report["tiles"]
    lines = [
        f"slide        {report['slide']}",
        f"format       {report['format']}" + (f" ({report['vendor']})" if report["vendor"] else ""),
        f"dimensions   {report['width']} x {report['height']} px, {len(report['levels'])} level(s)",
    ]
    for level in report["levels"]:
        lines.append(
            f"  level {level['index']}    {level['width']} x {level['height']}  "
            f"downsample {level['downsample']:.4f}  {level['mpp']:.4f} um/px"
        )
    mpp_x, mpp_y = report["mpp"]
    lines.append(f"mpp          {mpp_x} x {mpp_y} um/px (source: {report['mpp_source']})")
    power = report["objective_power"]
    lines.append(f"objective    {f'{power:g}x' if power else 'unknown'}")
    lines.append(f"tissue       {100 * report['tissue_fraction']:.1f} % of the slide")
    resampling = (
        "no resampling" if tiles["read_px"] == tiles["tile_px"] else f"resized to {tiles['tile_px']} px"
    )
    lines.append(
        f"tiles        {tiles['kept']} kept of {tiles['total']} at {tiles['target_mpp']} um/px "
        f"({tiles['candidates']} passed the tissue mask)"
    )
    lines.append(
        f"             read {tiles['read_px']} px at level {tiles['read_level']} "
        f"({tiles['level_mpp']:.4f} um/px, {resampling})"
    )
    if report["thumbnail"]:
        lines.append(f"thumbnail    {report['thumbnail']}")
    lines += [f"QC warning: {note['message']}" for note in report["qc_warnings"]]  # as score/predict print
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    @user_errors
    def inspect(
        slide: SlideArg,
        mpp: MppOpt = None,
        as_json: JsonOpt = False,
        thumbnail: Path | None = typer.Option(
            None,
            "--thumbnail",
            help="Write a picture with the tissue mask and the kept tiles (e.g. out.png).",
        ),
    ) -> None:
        """Describe a slide: format, levels, pixel size and its source, tissue and 20x tile counts."""
        from sequoia_clinic.pipeline.inspect import InspectRequest, inspect_slide

        report = inspect_slide(InspectRequest(slide, mpp, thumbnail), build_settings()).to_dict()
        typer.echo(json.dumps(report, sort_keys=False) if as_json else _human(report))
