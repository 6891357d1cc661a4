"""``calibrate`` as one stage call: check the request, read the cohort table, fit the model, write it.

:func:`calibrate` takes a :class:`CalibrateRequest` (which table, signature and columns; where to write)
and the run's :class:`~sequoia_clinic.settings.Settings` (``settings.risk``: CV repeats, bootstrap counts,
seed, penalty). The request is checked before the table is read, everything is computed before anything
is written, and each file (the model JSON and, beside it, the model card ``<stem>.card.png``, ``.pdf``,
``.md``) is written atomically, so a bad input leaves nothing behind. Errors about one request field name
it (``SequoiaError.option``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sequoia_clinic.errors import OptionError
from sequoia_clinic.settings import Settings
from sequoia_clinic.signatures import get_signature
from sequoia_clinic.survival.card import write_model_and_card
from sequoia_clinic.survival.cohort import check_time_unit, read_table
from sequoia_clinic.survival.cutoffs import CutoffSpec
from sequoia_clinic.survival.fit import fit_risk_model
from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.records import ExpressionSource


@dataclass(frozen=True)
class CalibrateRequest:
    """One calibration: a cohort table (one row per patient) and what to fit on it."""

    table: Path  # CSV or Parquet
    signature: str  # a registry name (wang76, ...) or a signature CSV file (gene[,weight])
    time_col: str
    event_col: str  # 1/true = event, 0/false = censored
    time_unit: str  # of the time column: days, months or years
    out: Path  # the model JSON; the card is written beside it
    covariates: tuple[str, ...] = ()  # numeric clinical covariates (unpenalised)
    cutoffs: CutoffSpec = field(default_factory=CutoffSpec)  # tertiles unless given
    endpoint: str = "event"  # the event's name for labels, e.g. "distant metastasis"
    cohort_name: str | None = None  # None: the table's file name
    expression_source: ExpressionSource = ExpressionSource.UNKNOWN
    card: bool = True  # also write the model card


@dataclass(frozen=True)
class CalibrateOutcome:
    """The fitted model and the files written (model JSON first)."""

    model: RiskModel
    files: tuple[Path, ...]


def check_request(request: CalibrateRequest) -> None:
    """The checks that need no data: time unit and output file name."""
    check_time_unit(request.time_unit)
    if request.out.suffix.lower() != ".json" or request.out.is_dir():
        raise OptionError(
            f"{request.out} must be a .json file name", fix="Pass e.g. risk_model.json.", option="out"
        )


def calibrate(request: CalibrateRequest, settings: Settings) -> CalibrateOutcome:
    """Fit a penalised Cox risk model of the signature's genes on the table, then write it and its card."""
    check_request(request)
    signature = get_signature(request.signature)
    frame = read_table(request.table)
    model = fit_risk_model(
        frame,
        signature,
        time_col=request.time_col,
        event_col=request.event_col,
        time_unit=request.time_unit,
        covariates=request.covariates,
        cutoffs=request.cutoffs,
        settings=settings.risk,
        endpoint=request.endpoint,
        cohort_name=request.cohort_name or request.table.name,
        path=request.table,
        expression_source=request.expression_source,
    )
    files = write_model_and_card(model, request.out, request.card)
    return CalibrateOutcome(model, tuple(files))
