"""Entry point of the ``sequoia-clinic`` command; each sub-command lives in its own module."""

from __future__ import annotations

import typer

from sequoia_clinic import __version__

app = typer.Typer(
    name="sequoia-clinic",
    help="H&E whole-slide image → predicted gene expression → breast-cancer risk report (research use).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sequoia-clinic {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """sequoia-clinic: research-use molecular risk reports from H&E slides."""


def _register() -> None:
    """Import the command modules; each adds itself to ``app`` (one module per command)."""
    import importlib

    for name in ("inspect", "predict", "models", "calibrate", "stratify", "score", "demo"):
        try:
            module = importlib.import_module(f"sequoia_clinic.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name == f"sequoia_clinic.cli.{name}_cmd":
                continue  # command not built yet
            raise
        module.register(app)


_register()
