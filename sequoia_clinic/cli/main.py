"""Entry point of the ``sequoia-clinic`` command; each sub-command lives in its own module.

:class:`CliGroup` runs the command line and owns how it ends: a parse error of typer/click (bad value,
unknown option, missing argument) is one ``error:`` line and exit code 2 (no usage box), and an
unexpected exception is an internal error (exit 1, traceback saved to a file; see ``cli/common.py``).
Library log records and warnings never reach the terminal, except as a debug log with ``--verbose``.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from typer._click.exceptions import NoArgsIsHelpError  # not exported by typer; its message is the help
from typer.core import TyperGroup

from sequoia_clinic import __version__
from sequoia_clinic.cli.common import (
    error_line,
    parse_error_message,
    report_internal_error,
    route_diagnostics,
)
from sequoia_clinic.cli.options import App

PARSE_ERROR_EXIT = 2
COMMANDS = (
    "inspect",
    "predict",
    "models",
    "calibrate",
    "stratify",
    "score",
    "demo",
    "cohort",
    "train",
    "evaluate",
)


class CliGroup(TyperGroup):
    """The top-level command group, with one-line errors and exit codes 0, 1 (bug), 2 (user error)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        route_diagnostics(verbose=False)  # until --verbose says otherwise: no library noise on stderr
        try:
            result = super().main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )  # not standalone: errors come here instead of typer's usage box
            code = result if isinstance(result, int) else 0
        except NoArgsIsHelpError as exc:
            exc.show()  # the help text
            code = exc.exit_code
        except typer.TyperException as exc:  # parse errors (bad value, unknown option, missing argument)
            error_line(parse_error_message(exc))
            code = PARSE_ERROR_EXIT
        except typer.Abort:
            error_line("interrupted; no output was written.")
            code = 130
        except Exception as exc:  # a bug: never shown as a user error
            code = report_internal_error(exc)
        if standalone_mode:
            sys.exit(code)
        return code


app = App(
    name="sequoia-clinic",
    cls=CliGroup,
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
    verbose: bool = typer.Option(
        False,
        "--verbose",
        help="Write a debug log (library messages, warnings) to stderr; give it before the command.",
    ),
) -> None:
    """sequoia-clinic: research-use molecular risk reports from H&E slides."""
    route_diagnostics(verbose)


def _register() -> None:
    """Import the command modules; each adds itself to ``app`` (one module per command)."""
    for name in COMMANDS:
        importlib.import_module(f"sequoia_clinic.cli.{name}_cmd").register(app)


_register()


def run() -> None:
    """The ``sequoia-clinic`` program (console script and ``python -m sequoia_clinic``).

    When the command is done (its files written, renamed into place and closed), the program runs the
    Python exit handlers (``atexit``: logging, multiprocessing, tempfile and Dask clean-ups), flushes its
    output and ends with ``os._exit``, skipping the interpreter's teardown. That teardown did nothing for
    the user and cost twice: CPython's final garbage collection over torch's object graph (0.3-0.5 s of a
    4 s ``score``), and the native destructors of the CUDA libraries that torch loads, which page in
    ~120 MB at exit and so set the peak RSS of a whole ``predict`` (``benches/bench_start.py``). Only the
    real program does this; tests call ``app`` in their own process. A non-exit exception still unwinds as
    usual.
    """
    try:
        app(prog_name="sequoia-clinic")
    except SystemExit as done:
        _exit_now(done.code)
    _exit_now(0)


def _exit_now(code: object) -> NoReturn:
    """Run the ``atexit`` handlers, flush stdout and stderr, and end the process with ``code``."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as the interpreter does
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()  # the interpreter's own first step of shutting down (CPython, since 3.0)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``| head``) or a closed stream: nothing to keep
            pass
    os._exit(status)
