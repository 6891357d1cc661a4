"""Shared CLI helpers: turning SequoiaError into one line + exit code 2, and console output."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from sequoia_clinic.errors import SequoiaError

P = ParamSpec("P")
R = TypeVar("R")


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator for command functions: SequoiaError (and a few OS errors) → one line, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SequoiaError as exc:
            raise fail(str(exc), exc.exit_code) from None
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


PRECISION_HELP = "Tile-encoder arithmetic: auto (bf16 where the CPU/GPU has it natively), fp32 or bf16."


def check_device(device: str, precision: str) -> None:
    """Refuse an unknown or absent device, or a precision it cannot run, before any work starts."""
    from sequoia_clinic.encoders import computes_in_bf16, resolve_device  # torch: imported only when used

    computes_in_bf16(resolve_device(device), precision)
