"""``sequoia-clinic predict SLIDE``: predicted gene expression for one slide, as one CSV/Parquet row.

The row holds ``slide_sha256``, ``bundle``, ``bundle_version``, ``bundle_trained``, ``tiles_used``,
``clusters_populated``, then one column per gene (bundle output order; all genes unless ``--genes``). The
slide's file name is not written (it may carry a patient identifier); the content hash identifies it.
Tile and cluster features are cached per slide (``--cache-dir``, default ``~/.cache/sequoia-clinic`` or
``SEQUOIA_CLINIC_CACHE``), so a second run skips tile encoding. A short summary, including every QC
warning, is printed; the output file is written atomically and only on success.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from sequoia_clinic.cli.common import PRECISION_HELP, check_device, stderr_console, user_errors
from sequoia_clinic.errors import OptionError
from sequoia_clinic.fileio import atomic_path, check_output_dir
from sequoia_clinic.settings import ModelSettings, Settings

# pandas and the pipeline stages (torch, timm) are imported inside the functions that use them, not here,
# so `sequoia-clinic --help` and the other commands start fast.
if TYPE_CHECKING:
    import pandas as pd

    from sequoia_clinic.bundles import Bundle
    from sequoia_clinic.pipeline.predict import InferenceResult

OUTPUT_FORMATS = (".csv", ".parquet")


def default_cache_dir() -> Path:
    """``$SEQUOIA_CLINIC_CACHE``, else ``$XDG_CACHE_HOME/sequoia-clinic``, else ``~/.cache/sequoia-clinic``."""
    if os.environ.get("SEQUOIA_CLINIC_CACHE"):
        return Path(os.environ["SEQUOIA_CLINIC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sequoia-clinic"


def parse_genes(text: str | None, all_genes: bool, bundle: Bundle) -> list[str]:
    """The requested genes in the given order, checked against the bundle's output list."""
    if text is not None and all_genes:
        raise OptionError("--genes and --all-genes exclude each other", fix="Pass only one of them.")
    if text is None:
        return list(bundle.genes)
    wanted = [g.strip() for g in text.split(",") if g.strip()]
    if not wanted:
        raise OptionError(
            "--genes is empty", fix="Pass gene symbols separated by commas, e.g. --genes ESR1,ERBB2."
        )
    known = set(bundle.genes)
    unknown = [g for g in wanted if g not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise OptionError(
            f"gene(s) not predicted by bundle '{bundle.name}': {shown}",
            fix="Use HGNC symbols from the bundle's genes.csv.",
        )
    return list(dict.fromkeys(wanted))


def check_output(out: Path) -> str:
    """The output format of ``out``, after checking (before any work) that the file can be written."""
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise OptionError(f"--out {out}: unsupported file type", fix="Use a .csv or .parquet file name.")
    if out.is_dir():
        raise OptionError(f"--out {out} is a folder", fix="Give a file name such as expression.csv.")
    check_output_dir(out.parent)
    return suffix


def result_row(result: InferenceResult, genes: list[str]) -> pd.DataFrame:
    """One row: identifiers and QC counts, then the predicted value of each gene."""
    import pandas as pd

    meta = {
        "slide_sha256": result.slide_sha256,
        "bundle": result.bundle_name,
        "bundle_version": result.bundle_version,
        "bundle_trained": result.bundle_trained,
        "tiles_used": len(result.used_indices),
        "clusters_populated": result.n_clusters_populated,
    }
    values = result.gene_values(genes)
    return pd.DataFrame([{**meta, **values}])


def write_row(frame: pd.DataFrame, out: Path, suffix: str) -> None:
    with atomic_path(out) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False, float_format="%.6g")
        else:
            frame.to_parquet(tmp, index=False)


def print_summary(console: Console, result: InferenceResult, genes: list[str], out: Path) -> None:
    trained = "trained" if result.bundle_trained else "[bold red]NOT TRAINED (demo)[/bold red]"
    info = result.slide_info
    grid = result.grid
    console.print(
        f"bundle      {result.bundle_name} {result.bundle_version} ({trained}), {result.device}, encoder {result.settings_used['precision']}"
    )
    console.print(
        f"slide       sha256 {result.slide_sha256[:16]}…, {info.format}, {info.mpp[0]:.4f} um/px ({info.mpp_source})"
    )
    console.print(
        f"tiles       {len(result.kept_indices)} kept of {grid.n_tiles}; {len(result.used_indices)} used "
        f"(cap {result.max_tiles}, seed {result.sample_seed})"
    )
    console.print(
        f"clusters    {result.cluster_method}: {result.n_clusters_populated} of "
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
        console.print(f"[yellow]QC warning: {note}[/yellow]")


def register(app: typer.Typer) -> None:
    @app.command("predict")
    @user_errors
    def predict(
        slide: Path = typer.Argument(..., help="Slide: .svs/.tif file or DICOM WSI folder."),
        bundle: str = typer.Option(
            "sequoia-brca-demo", "--bundle", envvar="SEQUOIA_CLINIC_BUNDLE", help="Bundle name or folder."
        ),
        genes: str | None = typer.Option(None, "--genes", help="Comma-separated genes (default: all)."),
        all_genes: bool = typer.Option(
            False, "--all-genes", help="Write every gene of the bundle (default)."
        ),
        out: Path = typer.Option(Path("expression.csv"), "--out", help="Output file, .csv or .parquet."),
        max_tiles: int | None = typer.Option(
            None, "--max-tiles", min=1, help="Tile cap (default: the bundle's, 4000 for SEQUOIA)."
        ),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
        mpp: float | None = typer.Option(None, "--mpp", help="Override the slide's pixel size (um/px)."),
        cache_dir: Path | None = typer.Option(
            None,
            "--cache-dir",
            help="Feature cache folder (default: $SEQUOIA_CLINIC_CACHE or ~/.cache/sequoia-clinic).",
        ),
        no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the feature cache."),
        batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Tiles per encoder batch."),
        encoder_weights: Path | None = typer.Option(
            None,
            "--encoder-weights",
            envvar="SEQUOIA_CLINIC_ENCODER_WEIGHTS",
            help="Local encoder weights to use instead of the bundle's copy (sha256 must still match).",
        ),
        models_dir: Path | None = typer.Option(
            None, "--models-dir", envvar="SEQUOIA_CLINIC_MODELS", help="Extra folder of bundles."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Predict gene expression for one slide and write it as one row."""
        from sequoia_clinic.bundles import load_bundle
        from sequoia_clinic.encoders import make_progress
        from sequoia_clinic.pipeline.predict import run_inference

        suffix = check_output(out)
        check_device(device, precision)
        base = Settings()
        settings = dataclasses.replace(
            base,
            device=device,
            precision=precision,
            quiet=quiet,
            cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
            encoder_batch_size=batch_size or base.encoder_batch_size,
            features=dataclasses.replace(base.features, max_tiles=max_tiles),  # None = the bundle's cap
            models=ModelSettings(models_dir=models_dir, encoder_weights=encoder_weights),
        )
        model = load_bundle(bundle, settings)
        wanted = parse_genes(genes, all_genes, model)
        progress = make_progress(quiet, stderr_console())
        if progress is None:
            result = run_inference(slide, model, settings, mpp=mpp)
        else:
            with progress:
                result = run_inference(slide, model, settings, mpp=mpp, progress=progress)
        write_row(result_row(result, wanted), out, suffix)
        print_summary(Console(highlight=False), result, wanted, out)
