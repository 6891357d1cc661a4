"""``sequoia-clinic predict SLIDE``: predicted gene expression for one slide, as one CSV/Parquet row.

Parses the options and calls :func:`sequoia_clinic.pipeline.predict.predict_slide`, which writes the row.
The row holds ``slide_sha256``, ``bundle``, ``bundle_version``, ``bundle_trained``, ``tiles_used``,
``clusters_populated``, then one column per gene (bundle output order; all genes unless ``--genes``). The
slide's file name is not written (it may carry a patient identifier); the content hash identifies it.
Tile and cluster features are cached per slide (``--cache-dir``, default ``~/.cache/sequoia-clinic`` or
``SEQUOIA_CLINIC_CACHE``), so a second run skips tile encoding. A short summary, including every QC
warning, is printed; the output file is written atomically and only on success.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import (
    DEFAULT_BUNDLE,
    BatchSizeOpt,
    BundleOpt,
    CacheDirOpt,
    Device,
    DeviceOpt,
    EncoderWeightsOpt,
    ExpressionOutOpt,
    MaxTilesOpt,
    ModelsDirOpt,
    MppOpt,
    NoCacheOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    SlideArg,
    TileOrderOpt,
    build_settings,
)
from sequoia_clinic.cli.output import progress_bar
from sequoia_clinic.errors import OptionError

# pandas and the pipeline (torch, timm) are imported inside the functions that use them, not here,
# so `sequoia-clinic --help` and the other commands start fast.
if TYPE_CHECKING:
    from sequoia_clinic.pipeline.predict import Prediction


def parse_genes(text: str | None, all_genes: bool) -> tuple[str, ...] | None:
    """The requested genes in the given order (None: all); the predict flow checks them against the bundle."""
    if text is not None and all_genes:
        raise OptionError("--genes and --all-genes exclude each other", fix="Pass only one of them.")
    if text is None:
        return None
    return tuple(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))


def print_summary(console: Console, result: Prediction, genes: list[str], out: Path) -> None:
    trained = "trained" if result.bundle_trained else "[bold red]NOT TRAINED (demo)[/bold red]"
    info = result.slide_info
    grid = result.grid
    console.print(
        f"bundle      {result.bundle_name} {result.bundle_version} ({trained}), {result.device}, encoder {result.settings_used.precision}"
    )
    console.print(
        f"slide       sha256 {result.slide_sha256[:16]}…, {info.format}, {info.mpp[0]:.4f} um/px ({info.mpp_source})"
    )
    console.print(
        f"tiles       {len(result.kept_indices)} kept of {grid.n_tiles}; {len(result.used_indices)} used "
        f"(cap {result.max_tiles}, seed {result.sample_seed})"
    )
    console.print(
        f"clusters    {result.clusters.method}: {result.clusters.n_populated} of "
        f"{len(result.cluster_features)} rows populated"
    )
    if result.cache_hit:
        console.print("encoder     features from cache (extraction skipped)")
    elif result.extraction is not None:
        console.print(
            f"encoder     {result.encoder_name}: {result.extraction.tiles_per_second:,.1f} tiles/s "
            f"({result.extraction.seconds:.1f} s)"
        )
    console.print(f"time        {result.timings['total']:.1f} s total")
    if len(genes) <= 10:
        for gene, value in result.gene_values(genes).items():
            console.print(f"  {gene:<12} {value: .4f}")
    console.print(f"wrote       {out} ({len(genes):,} genes)")
    for note in result.qc_warnings:
        console.print(f"[yellow]QC warning: {note.message}[/yellow]")


def register(app: typer.Typer) -> None:
    @app.command("predict")
    @user_errors
    def predict(
        slide: SlideArg,
        bundle: BundleOpt = DEFAULT_BUNDLE,
        genes: str | None = typer.Option(None, "--genes", help="Comma-separated genes (default: all)."),
        all_genes: bool = typer.Option(
            False, "--all-genes", help="Write every gene of the bundle (default)."
        ),
        out: ExpressionOutOpt = Path("expression.csv"),
        max_tiles: MaxTilesOpt = None,
        tile_order: TileOrderOpt = None,
        device: DeviceOpt = Device.CPU,
        precision: PrecisionOpt = Precision.AUTO,
        mpp: MppOpt = None,
        cache_dir: CacheDirOpt = None,
        no_cache: NoCacheOpt = False,
        batch_size: BatchSizeOpt = None,
        encoder_weights: EncoderWeightsOpt = None,
        models_dir: ModelsDirOpt = None,
        quiet: QuietOpt = False,
    ) -> None:
        """Predict gene expression for one slide and write it as one row."""
        from sequoia_clinic.pipeline.predict import PredictRequest, predict_slide

        settings = build_settings(
            device=device,
            precision=precision,
            max_tiles=max_tiles,
            tile_order=tile_order,
            batch_size=batch_size,
            cache_dir=cache_dir,
            no_cache=no_cache,
            models_dir=models_dir,
            encoder_weights=encoder_weights,
        )
        request = PredictRequest(slide, bundle, mpp, parse_genes(genes, all_genes), out=out)
        with progress_bar(quiet) as progress:
            result = predict_slide(request, settings, progress)
        wanted = list(request.genes or result.genes)
        print_summary(Console(highlight=False), result, wanted, out)
