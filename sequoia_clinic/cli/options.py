"""The command-line options shared by several commands, declared once, and the one function building Settings.

Each shared option is an ``Annotated`` alias (``device: DeviceOpt = Device.CPU``), so its flag, help and
checks live here only. Fixed choices are Enums (``--device``, ``--precision``, ``--time-unit``) or come
from their registry (``--encoder``, ``--signature``, ``--format``): ``--help`` lists the real choices and
the parser refuses a bad value. Registry choices are read on first use (that command's ``--help`` or
parsing; :class:`App` makes every command a :class:`Command`, which lists them in its help), so importing
the CLI stays fast (no torch, pandas or matplotlib). :func:`build_settings` is the only place that turns
options into :class:`~sequoia_clinic.settings.Settings` and resolves defaults such as the cache folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from sequoia_clinic.locations import default_cache_dir, weights_cache_dir
from sequoia_clinic.settings import Device, Precision, RiskSettings, Settings, TileOrder
from sequoia_clinic.units import TimeUnit

if TYPE_CHECKING:
    from sequoia_clinic.report.files import OutputFormat

__all__ = [
    "DEFAULT_BUNDLE",
    "AggregatorOpt",
    "App",
    "BatchSizeOpt",
    "BundleOpt",
    "CacheDirOpt",
    "Command",
    "Device",
    "DeviceOpt",
    "EncoderOpt",
    "EncoderWeightsOpt",
    "ExpressionOutOpt",
    "FormatsOpt",
    "JsonOpt",
    "MaxTilesOpt",
    "ModelsDirOpt",
    "MppOpt",
    "NoCacheOpt",
    "OutDirOpt",
    "OutFileOpt",
    "Precision",
    "PrecisionOpt",
    "QuietOpt",
    "ReportDirOpt",
    "SignatureOpt",
    "SlideArg",
    "TileOrder",
    "TileOrderOpt",
    "TimeUnit",
    "TimeUnitOpt",
    "build_settings",
    "flag_name",
    "parse_formats",
]

DEFAULT_BUNDLE = "sequoia-brca-demo"  # = sequoia_clinic.pipeline.predict.DEFAULT_BUNDLE (a test checks)


# ---- choices read from a registry on first use ------------------------------------------------------------
class RegistryChoice:
    """An option parser accepting the names of a registry, read from ``load()`` when first needed.

    Used as ``typer.Option(parser=RegistryChoice(load))``; :class:`Command` lists the names in ``--help``.
    With ``is_file``, a value it accepts (a user file, e.g. a signature CSV) is taken as well.
    """

    def __init__(
        self, load: Callable[[], Iterable[str]], is_file: Callable[[str], bool] | None = None
    ) -> None:
        self._load = load
        self._choices: tuple[str, ...] | None = None
        self.is_file = is_file

    @property
    def choices(self) -> tuple[str, ...]:
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices

    def metavar(self) -> str:
        return f"[{'|'.join(self.choices)}{'|FILE' if self.is_file else ''}]"

    def __call__(self, value: str) -> str:
        text = str(value)
        if text in self.choices or (self.is_file is not None and self.is_file(text)):
            return text
        files = ", or a file" if self.is_file else ""
        raise typer.BadParameter(f"'{text}' is not one of {', '.join(self.choices)}{files}.")


class FormatList:
    """Parser of a comma-separated list of report formats (``pdf,json,dicom``), checked against ``OutputFormat``.

    Returns the names, lower-case and comma-joined; :func:`parse_formats` turns them into ``OutputFormat``.
    """

    @staticmethod
    def known() -> tuple[str, ...]:
        from sequoia_clinic.report.files import OutputFormat  # matplotlib: only when this option is used

        return tuple(f.value for f in OutputFormat)

    def metavar(self) -> str:
        return f"[{','.join(self.known())}]"

    def __call__(self, value: str) -> str:
        names = [part.strip().lower() for part in str(value).split(",") if part.strip()]
        unknown = [name for name in names if name not in self.known()]
        if unknown or not names:
            raise typer.BadParameter(
                f"unknown format(s) {', '.join(unknown) or '(none)'}; "
                f"use a comma-separated list of {', '.join(self.known())}."
            )
        return ",".join(names)


def parse_formats(text: str) -> tuple[OutputFormat, ...]:
    """A ``--format`` value (already checked by the parser) → the formats in canonical order."""
    from sequoia_clinic.report.files import OutputFormat

    names = set(text.split(","))
    return tuple(f for f in OutputFormat if f.value in names)


def positive_number(value: str) -> float:
    """Parser of a number > 0 (a pixel size)."""
    try:
        number = float(value)
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a number.") from None
    if not number > 0:
        raise typer.BadParameter(f"{value} is not above 0.")
    return number


def _encoder_names() -> tuple[str, ...]:
    from sequoia_clinic.encoders.registry import ENCODERS

    return tuple(ENCODERS)


def _aggregator_names() -> tuple[str, ...]:
    from sequoia_clinic.aggregator.registry import AGGREGATORS

    return tuple(AGGREGATORS)


def _signature_names() -> tuple[str, ...]:
    from sequoia_clinic.signatures.registry import list_signatures  # pandas: only when this option is used

    return list_signatures()


def _is_signature_file(text: str) -> bool:
    from sequoia_clinic.signatures.registry import FILE_SUFFIXES

    return Path(text).suffix.lower() in FILE_SUFFIXES or Path(text).exists()


class Command(TyperCommand):
    """A command whose registry choices are read and listed only when its ``--help`` is shown."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.params:
            descriptor = getattr(param, "type_descriptor", None)
            parser = getattr(getattr(descriptor, "parameter_info", None), "parser", None)
            if isinstance(parser, RegistryChoice | FormatList) and param.metavar is None:
                param.metavar = parser.metavar()
        super().format_help(ctx, formatter)


class App(typer.Typer):
    """``typer.Typer`` whose commands are :class:`Command` s (registry choices listed in ``--help``)."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


# ---- the shared options ------------------------------------------------------------------------------------
SlideArg = Annotated[
    Path,
    typer.Argument(
        metavar="SLIDE",
        help="Slide: .svs/.tif file, DICOM WSI folder or one of its .dcm files.",
        show_default=False,
    ),
]
BundleOpt = Annotated[
    str,
    typer.Option("--bundle", envvar="SEQUOIA_CLINIC_BUNDLE", help="Model bundle name or folder."),
]
MppOpt = Annotated[
    float | None,
    typer.Option(
        "--mpp",
        parser=positive_number,
        metavar="FLOAT",
        help="Pixel size at full resolution in um/px; overrides the file (0.25 = 40x).",
    ),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where the networks run.")]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="Tile-encoder arithmetic: auto (bf16 where the CPU/GPU has it natively), fp32 or bf16.",
    ),
]
MaxTilesOpt = Annotated[
    int | None,
    typer.Option("--max-tiles", min=1, help="Tile cap (default: the bundle's, 4000 for SEQUOIA)."),
]
TileOrderOpt = Annotated[
    TileOrder | None,
    typer.Option(
        "--tile-order",
        help="Which tiles k-means gets, in which order (default: the bundle's; imported SEQUOIA bundles: "
        "reference).",
    ),
]
MAX_ENCODER_BATCH = 1024  # 1,024 tiles are 200 MB of pixels before the encoder's activations
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        max=MAX_ENCODER_BATCH,
        help="Tiles per encoder batch (default: the encoder's own; 256 suits a GPU).",
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Cache folder: slide features and generated demo weights "
        "(default: $SEQUOIA_CLINIC_CACHE or ~/.cache/sequoia-clinic).",
    ),
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the feature cache.")]
ModelsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--models-dir", envvar="SEQUOIA_CLINIC_MODELS", help="Extra folder of bundles (searched first)."
    ),
]
EncoderWeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--encoder-weights",
        envvar="SEQUOIA_CLINIC_ENCODER_WEIGHTS",
        help="Local encoder weights to use instead of the bundle's copy (sha256 must still match).",
    ),
]
EncoderOpt = Annotated[
    str,
    typer.Option("--encoder", parser=RegistryChoice(_encoder_names), help="Tile encoder (registry name)."),
]
AggregatorOpt = Annotated[
    str,
    typer.Option(
        "--aggregator", parser=RegistryChoice(_aggregator_names), help="Aggregator kind (registry name)."
    ),
]
SignatureOpt = Annotated[
    str,
    typer.Option(
        "--signature",
        parser=RegistryChoice(_signature_names, _is_signature_file),
        help="A bundled signature, or a CSV file with a 'gene' column (optional 'weight').",
    ),
]
TimeUnitOpt = Annotated[TimeUnit, typer.Option("--time-unit", help="Unit of the follow-up time column.")]
FormatsOpt = Annotated[
    str, typer.Option("--format", parser=FormatList(), help="Report files to write, comma-separated.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ExpressionOutOpt = Annotated[Path, typer.Option("--out", help="Output file, .csv or .parquet.")]
ReportDirOpt = Annotated[
    Path | None, typer.Option("--out", help="Output folder (default ./<slide-stem>-report/).")
]
OutDirOpt = Annotated[Path | None, typer.Option("--out", help="Output folder.")]
OutFileOpt = Annotated[Path | None, typer.Option("--out", help="Output file.")]

# Library parameter names (SequoiaError.option) whose flag is not "--" + the name with "-" for "_".
LIBRARY_FLAGS = {"out_dir": "--out", "name": "--patient-name"}


def flag_name(option: str) -> str:
    """The flag of library parameter ``option`` (``max_tiles`` → ``--max-tiles``)."""
    return LIBRARY_FLAGS.get(option, "--" + option.replace("_", "-"))


class TransformChoice(StrEnum):
    """``--expression-transform`` of train/evaluate (= sequoia_clinic.training.Transform; no torch here)."""

    LOG2P1 = "log2p1"
    NONE = "none"


# ---- Settings ----------------------------------------------------------------------------------------------
def build_settings(
    *,
    device: Device = Device.CPU,
    precision: Precision = Precision.AUTO,
    max_tiles: int | None = None,
    tile_order: TileOrder | None = None,
    batch_size: int | None = None,
    cache_dir: Path | None = None,
    no_cache: bool = False,
    models_dir: Path | None = None,
    encoder_weights: Path | None = None,
    pseudonym_key: str | None = None,
    risk: RiskSettings | None = None,
) -> Settings:
    """The one frozen Settings of a command, from its parsed options (None / False: the default).

    The only place the CLI resolves defaults: the cache folder (``--cache-dir``, else
    :func:`~sequoia_clinic.locations.default_cache_dir`) holds the feature cache (unless ``--no-cache``)
    and the generated demo weights.
    """
    base = Settings()
    cache_root = cache_dir if cache_dir is not None else default_cache_dir()
    return dataclasses.replace(
        base,
        device=device,
        precision=precision,
        encoder_batch_size=batch_size or base.encoder_batch_size,
        cache_dir=None if no_cache else cache_root,
        # None = the bundle's cap and tile order
        features=dataclasses.replace(base.features, max_tiles=max_tiles, tile_order=tile_order),
        models=dataclasses.replace(
            base.models,
            models_dir=models_dir,
            weights_cache_dir=weights_cache_dir(cache_root),
            encoder_weights=encoder_weights,
        ),
        report=dataclasses.replace(base.report, pseudonym_key=pseudonym_key),
        risk=risk if risk is not None else base.risk,
    )
