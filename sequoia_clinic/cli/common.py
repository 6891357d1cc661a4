"""How the CLI ends a run that failed: one ``error:`` line on stderr and an exit code.

* a user-caused error (:class:`~sequoia_clinic.errors.SequoiaError`, a full disk, a bad option) → exit 2;
  an error naming a library parameter (``option``) is shown with that parameter's flag;
* a parse error of typer/click (bad value, unknown option, missing argument) → exit 2 (see ``main``);
* anything else is a bug → exit 1 with ``error: internal error (<type>); this is a bug — traceback saved
  to <file>`` (the traceback goes to a private file in the temp folder, never to the terminal).

:func:`route_diagnostics` keeps everything else off the terminal: log records of any library (zarr, asyncio
"Task was destroyed", tifffile, pydicom ...), Python warnings (also those emitted at interpreter exit) and
"Exception ignored in" messages are dropped, or written to stderr as a debug log with ``--verbose``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from sequoia_clinic.cli.options import flag_name
from sequoia_clinic.errors import SequoiaError

P = ParamSpec("P")
R = TypeVar("R")

INTERNAL_ERROR_EXIT = 1
TRACEBACK_PREFIX = "sequoia-clinic-traceback-"


DEBUG_FORMAT = "debug: %(name)s %(levelname)s %(message)s"


class _DebugLog(logging.Handler):
    """The one place diagnostics go: nowhere, or stderr (as ``debug:`` lines) with ``--verbose``."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.verbose = False
        self.setFormatter(logging.Formatter(DEBUG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if not self.verbose:
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # never let a diagnostic break (or print about) the run
            pass


_DEBUG_LOG = _DebugLog()


def _unraisable(hook_args: object) -> None:
    """``sys.unraisablehook``: 'Exception ignored in ...' (e.g. a zarr task at exit) → the debug log."""
    exc = getattr(hook_args, "exc_value", None)
    logging.getLogger("sequoia_clinic.unraisable").debug("ignored exception: %r", exc)


def route_diagnostics(verbose: bool) -> None:
    """Send library log records, warnings and unraisable exceptions to the debug log (stderr if ``verbose``).

    Process-wide and idempotent: the CLI calls it before parsing (quiet) and again for ``--verbose``.
    Handlers others installed (a test's log capture) are left in place; only the fall-back printing to
    stderr (``logging.lastResort``, ``warnings.showwarning``, the unraisable hook) is replaced.
    """
    _DEBUG_LOG.verbose = verbose
    root = logging.getLogger()
    if _DEBUG_LOG not in root.handlers:
        root.addHandler(_DEBUG_LOG)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.lastResort = None  # records with no other handler must not reach stderr
    logging.raiseExceptions = False
    for name in ("asyncio", "py.warnings"):
        logger = logging.getLogger(name)
        logger.propagate = False
        if _DEBUG_LOG not in logger.handlers:
            logger.addHandler(_DEBUG_LOG)
    logging.captureWarnings(True)
    sys.unraisablehook = _unraisable


def error_line(message: str) -> None:
    """Write ``error: <message>`` as one line on stderr."""
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    sys.stderr.flush()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise."""
    error_line(message)
    return typer.Exit(code)


def user_message(exc: SequoiaError) -> str:
    """The error's line, its library parameter (if any) named by its command-line flag."""
    return str(exc) if exc.option is None else exc.render(flag_name(exc.option))


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator for command functions: SequoiaError (and a few OS errors) → one line, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SequoiaError as exc:
            raise fail(user_message(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted; no output was written.", 130) from None
        except PermissionError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}permission denied. Check the file's permissions.") from None
        except OSError as exc:  # disk full, read-only or vanished folders: the environment, not a bug
            where = f"{exc.filename}: " if exc.filename else ""
            reason = exc.strerror or type(exc).__name__
            raise fail(f"{where}{reason}. Check the path, free space and permissions.") from None

    return wrapper


def parse_error_message(exc: typer.TyperException) -> str:
    """A typer parse error as one line naming the option, with the fix (the command's --help)."""
    message = " ".join(exc.format_message().split()).replace(": Value error, ", ": ")
    message = message[:1].lower() + message[1:]
    if not message.endswith((".", "?")):
        message += "."
    ctx = getattr(exc, "ctx", None)
    return f"{message} See '{ctx.command_path} --help'." if ctx is not None else message


def save_traceback(exc: BaseException) -> str:
    """Write ``exc``'s traceback to a new private file in the temp folder; returns its path."""
    fd, path = tempfile.mkstemp(prefix=TRACEBACK_PREFIX, suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(traceback.format_exception(exc)))
    return path


def report_internal_error(exc: BaseException) -> int:
    """A programming error: one line naming the exception type and the traceback file; returns exit code 1."""
    try:
        where = f"traceback saved to {save_traceback(exc)}"
    except OSError as write_error:
        where = f"the traceback could not be saved ({type(write_error).__name__})"
    error_line(f"internal error ({type(exc).__name__}); this is a bug — {where}")
    return INTERNAL_ERROR_EXIT
