"""The exception hierarchy of sequoia-clinic.

Every error a user can cause is a :class:`SequoiaError`. The CLI turns it into one line on stderr and
exit code 2 (no traceback). Messages name the file and the fix, and never carry patient identifiers. An
error about one parameter names it in ``option`` (the library's parameter name, e.g. ``max_tiles``); the
message then starts with that name, and the CLI renders it with the matching flag (``--max-tiles``).
"""

from __future__ import annotations

from pathlib import Path


class SequoiaError(Exception):
    """Base class for errors caused by user input or environment (exit code 2)."""

    exit_code: int = 2

    def __init__(
        self,
        message: str,
        path: Path | str | None = None,
        fix: str | None = None,
        *,
        option: str | None = None,
    ) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.fix = fix
        self.option = option  # the library parameter at fault (e.g. "max_tiles"), or None
        super().__init__(self.render())

    def render(self, option_label: str | None = None) -> str:
        """The one-line message, naming ``option`` as ``option_label`` when given (the CLI passes its flag)."""
        head = f"{self.path}: {self.message}" if self.path is not None else self.message
        label = option_label or self.option
        parts = [f"{label}: {head}" if label else head]
        if self.fix:
            parts.append(self.fix)
        return " ".join(p.rstrip() if p.rstrip().endswith(".") else p.rstrip() + "." for p in parts)


class InputPathError(SequoiaError):
    """A path that does not exist or is of the wrong kind."""


class SlideFormatError(SequoiaError):
    """A file that is not a readable whole-slide image (wrong format, corrupt, truncated)."""


class CorruptTileError(SlideFormatError):
    """One stored tile of a slide cannot be decoded (the rest of the slide may still be readable)."""


class MissingMetadataError(SequoiaError):
    """Required slide metadata (for example the pixel size) is absent."""


class NoTissueError(SequoiaError):
    """The tissue detector found no tissue (or no usable tiles) on the slide."""


class BundleError(SequoiaError):
    """A model bundle is missing, malformed, or fails its checksums."""


class ChecksumError(BundleError):
    """A file's sha256 differs from the one recorded in its manifest."""


class WeightsError(SequoiaError):
    """A weights file cannot be loaded into the expected architecture."""


class TableError(SequoiaError):
    """A cohort or expression table is malformed (columns, types, values)."""


class SignatureError(SequoiaError):
    """A gene signature is unknown or malformed."""


class RiskModelError(SequoiaError):
    """A risk-model file is malformed or does not fit the data it is applied to."""


class OptionError(SequoiaError):
    """A command-line option has an invalid value."""


class ReportError(SequoiaError):
    """Report inputs are inconsistent, a report template is missing/malformed, or a report cannot be written."""


class ResultSchemaError(ReportError):
    """A result.json document does not match sequoia_clinic/schemas/result.schema.json."""
