"""``calibrate`` as one stage call: check the request, read the cohort table, fit the model, write it.

:func:`calibrate` takes a :class:`CalibrateRequest` (which table, signature and columns; where to write)
and the run's :class:`~sequoia_clinic.settings.Settings` (``settings.risk``: CV repeats, bootstrap counts,
seed, penalty). The request is checked before the table is read, everything is computed before anything
is written, and each file (the model JSON and, beside it, the model card ``<stem>.card.png``, ``.pdf``,
``.md``) is written atomically, so a bad input leaves nothing behind. Errors about one request field name
it (``SequoiaError.option``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from sequoia_clinic.errors import OptionError
from sequoia_clinic.settings import Settings
from sequoia_clinic.signatures import Signature, get_signature
from sequoia_clinic.survival.card import write_model_and_card
from sequoia_clinic.survival.clinical import MissingRule
from sequoia_clinic.survival.cohort import check_time_unit, read_table
from sequoia_clinic.survival.cutoffs import CutoffSpec
from sequoia_clinic.survival.fit import fit_risk_model
from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.population import load_population
from sequoia_clinic.survival.predicted import check_out_of_fold, expression_shrinkage
from sequoia_clinic.survival.records import ExpressionSource
from sequoia_clinic.survival.subgroups import SubgroupSpec


@dataclass(frozen=True)
class CalibrateRequest:
    """One calibration: a cohort table (one row per patient) and what to fit on it."""

    table: Path  # CSV or Parquet
    signature: str  # a registry name (wang76, ...) or a signature CSV file (gene[,weight])
    time_col: str
    event_col: str  # 1/true = event, 0/false = censored
    time_unit: str  # of the time column: days, months or years
    out: Path  # the model JSON; the card is written beside it
    covariates: tuple[str, ...] = ()  # clinical covariates NAME[:KIND[:REFERENCE]] (unpenalised)
    cutoffs: CutoffSpec = field(default_factory=CutoffSpec)  # tertiles unless given
    endpoint: str = "event"  # the event's name for labels, e.g. "distant metastasis"
    cohort_name: str | None = None  # None: the table's file name
    expression_source: ExpressionSource = ExpressionSource.UNKNOWN
    card: bool = True  # also write the model card
    missing: MissingRule = MissingRule.REFUSE  # missing clinical values: refuse, or impute (recorded)
    population: Path | None = None  # JSON of the intended population and development data (TRIPOD+AI)
    training_splits: Path | None = None  # the bundle's splits.json: refuse in-sample predictions (predicted)
    measured: Path | None = None  # measured expression of the same patients: record the prediction shrinkage
    id_col: str = "patient_id"  # the patient column matching the table with the splits / measured table
    reliable_genes: frozenset[str] | None = None  # --reliable-genes-only: keep only these signature genes
    reliable_source: str = ""  # where reliable_genes come from (recorded in the signature's description)
    subgroups: tuple[SubgroupSpec, ...] = ()  # --subgroup: out-of-fold C per level (TRIPOD+AI item 14)


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


def reliable_only(signature: Signature, reliable: frozenset[str], source: str) -> Signature:
    """The signature restricted to its reliably predicted genes (weights and groups kept aligned)."""
    keep = [i for i, gene in enumerate(signature.genes) if gene in reliable]
    if not keep:
        raise OptionError(
            f"none of the {len(signature.genes)} genes of signature '{signature.name}' is reliably predicted "
            f"({source})",
            fix="Calibrate without --reliable-genes-only, or use a bundle that predicts these genes reliably.",
            option="reliable_genes_only",
        )
    note = f"Restricted to the {len(keep)} of {len(signature.genes)} genes reliably predicted ({source})."
    return replace(
        signature,
        genes=tuple(signature.genes[i] for i in keep),
        weights=None if signature.weights is None else tuple(signature.weights[i] for i in keep),
        groups=None if signature.groups is None else tuple(signature.groups[i] for i in keep),
        description=f"{signature.description} {note}".strip(),
    )


def calibrate(request: CalibrateRequest, settings: Settings) -> CalibrateOutcome:
    """Fit a penalised Cox risk model of the signature's genes on the table, then write it and its card."""
    check_request(request)
    signature = get_signature(request.signature)
    if request.reliable_genes is not None:
        signature = reliable_only(signature, request.reliable_genes, request.reliable_source)
    population = load_population(request.population) if request.population is not None else None
    frame = read_table(request.table)
    if request.training_splits is not None:
        check_out_of_fold(frame, request.training_splits, request.id_col, request.table)
    shrinkage = None
    if request.measured is not None:
        shrinkage = expression_shrinkage(
            frame,
            read_table(request.measured),
            signature.genes,
            request.id_col,
            request.table,
            request.measured,
        )
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
        missing=request.missing,
        population=population,
        shrinkage=shrinkage,
        subgroups=request.subgroups,
    )
    files = write_model_and_card(model, request.out, request.card)
    return CalibrateOutcome(model, tuple(files))
