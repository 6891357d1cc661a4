"""``sequoia-clinic models list|verify|import``: the model bundles on this machine.

* ``models list`` shows every bundle in the search folders (``--models-dir`` / ``SEQUOIA_CLINIC_MODELS``,
  then the shipped ``models/``), flagging untrained and unreadable ones.
* ``models verify NAME|PATH`` checks the sha256 of every file named by the manifest (generating a demo
  bundle's weights into the user cache first if they are missing); exit code 2 on any mismatch.
* ``models import --uni-weights FILE --sequoia DIR [--sequoia DIR ...] --name NAME --dest DIR`` builds a
  bundle in DIR from the user's own UNI weights and downloaded SEQUOIA checkpoint folders (``config.json`` +
  ``model.safetensors``), after loading every file strictly; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import AggregatorOpt, App, EncoderOpt, JsonOpt, ModelsDirOpt, build_settings
from sequoia_clinic.cli.output import stderr_console, stdout_console

models_app = App(help="List, verify and import model bundles.", no_args_is_help=True)


@models_app.command("list")
@user_errors
def list_command(models_dir: ModelsDirOpt = None, as_json: JsonOpt = False) -> None:
    """List the bundles found in the search folders."""
    # Imported here, not at module level (torch, timm), so the CLI starts fast.
    from sequoia_clinic.bundles.store import scan_bundles

    listings = scan_bundles(build_settings(models_dir=models_dir))
    if as_json:
        rows = []
        for item in listings:
            b = item.bundle
            rows.append(
                {"path": str(item.path), "error": item.error}
                if b is None
                else {
                    "name": b.name,
                    "version": b.version,
                    "cancer": b.cancer,
                    "trained": b.trained,
                    "encoder": b.encoder_name,
                    "aggregator": b.aggregator,
                    "folds": len(b.folds),
                    "genes": len(b.genes),
                    "path": str(b.path),
                }
            )
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="model bundles")
    for column in ("name", "version", "cancer", "trained", "encoder", "aggregator", "folds", "genes", "path"):
        table.add_column(column)
    for item in listings:
        b = item.bundle
        if b is None:
            table.add_row("[red]broken[/red]", "", "", "", "", "", "", "", f"{item.path}: {item.error}")
            continue
        trained = "yes" if b.trained else "[bold red]NO (demo)[/bold red]"
        table.add_row(
            b.name,
            b.version,
            b.cancer,
            trained,
            b.encoder_name,
            b.aggregator,
            str(len(b.folds)),
            f"{len(b.genes):,}",
            str(b.path),
        )
    stdout_console().print(table)
    if not listings:
        stderr_console().print("no bundles found; see `sequoia-clinic models import --help`.")


@models_app.command("verify")
@user_errors
def verify_command(
    bundle: str = typer.Argument(..., help="Bundle name or folder."),
    models_dir: ModelsDirOpt = None,
) -> None:
    """Check the sha256 of every file of a bundle against its manifest."""
    # Imported here, not at module level (torch, timm), so the CLI starts fast.
    from sequoia_clinic.bundles.store import verify_bundle

    report = verify_bundle(bundle, build_settings(models_dir=models_dir))
    table = Table(title=f"{report.bundle.name} {report.bundle.version}")
    for column in ("file", "role", "bytes", "sha256", "status"):
        table.add_column(column)
    for check in report.checks:
        style = "green" if check.status == "ok" else "bold red"
        size = f"{check.bytes:,}" if check.bytes is not None else "-"
        table.add_row(
            check.file, check.role, size, check.expected[:16] + "…", f"[{style}]{check.status}[/{style}]"
        )
    stdout_console().print(table)
    for path in report.generated:
        stderr_console().print(f"generated {path.name} from its manifest recipe (untrained demo weights)")
    report.raise_for_errors()
    if not report.bundle.trained:
        stderr_console().print(
            "[yellow]note: this bundle is NOT trained; its predictions are meaningless.[/yellow]"
        )
    typer.echo(
        f"ok: all {len(report.checks)} files match the manifest (manifest sha256 {report.bundle.manifest_sha256[:16]}…)"
    )


@models_app.command("import")
@user_errors
def import_command(
    uni_weights: Path = typer.Option(
        ...,
        "--uni-weights",
        "--encoder-weights",
        help="Your local UNI pytorch_model.bin (or the encoder's file).",
    ),
    sequoia: list[Path] = typer.Option(
        ...,
        "--sequoia",
        help="A downloaded checkpoint folder (config.json + model.safetensors); repeat per fold.",
    ),
    name: str = typer.Option(..., "--name", help="Name of the new bundle (lowercase, e.g. sequoia-brca)."),
    encoder: EncoderOpt = "uni",
    aggregator: AggregatorOpt = "vis",
    cancer: str | None = typer.Option(None, "--cancer", help="Cancer type (default: from the folder names)."),
    version: str = typer.Option("1.0.0", "--version", help="Version string recorded in the manifest."),
    genes: Path | None = typer.Option(
        None, "--genes", help="Gene list CSV (default: the 20,820 SEQUOIA genes)."
    ),
    dest: Path = typer.Option(
        ...,
        "--dest",
        envvar="SEQUOIA_CLINIC_MODELS",
        help="Folder to create the bundle in, e.g. ~/sequoia-models (required; never the installed package). "
        "Pass the same folder as --models-dir, or set SEQUOIA_CLINIC_MODELS, to use the bundle by name.",
    ),
    symlink: bool = typer.Option(
        False, "--symlink", help="Link the encoder weights instead of copying them."
    ),
) -> None:
    """Build a bundle from local UNI weights and SEQUOIA checkpoint folders (no download)."""
    # Imported here, not at module level (torch, timm), so the CLI starts fast.
    from sequoia_clinic.bundles.importer import import_bundle

    bundle = import_bundle(
        name=name,
        sequoia_dirs=sequoia,
        encoder_weights=uni_weights,
        dest=dest,
        encoder=encoder,
        aggregator=aggregator,
        cancer=cancer,
        version=version,
        genes_csv=genes,
        symlink_encoder=symlink,
    )
    typer.echo(
        f"imported bundle '{bundle.name}' ({bundle.cancer}, {len(bundle.folds)} folds, "
        f"{len(bundle.genes):,} genes) into {bundle.path}; all checksums verified"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
