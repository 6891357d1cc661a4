"""``calibrate`` as one stage call: check the request, read the cohort table, fit the model, write it.

:func:`calibrate` takes a :class:`CalibrateRequest` (which table, signature and columns; where to write)
and the run's :class:`~sequoia_clinic.settings.Settings` (``settings.risk``: CV repeats, bootstrap counts,
seed, penalty). The request is checked before the table is read; of the table (and of the measured table)
only the columns the fit uses are parsed, typed (:func:`cohort_columns`): times, genes and folds as numbers,
ids, events and covariates as text, subgroup columns as pandas guesses them. Everything is computed before
anything is written, and each file (the model JSON and, beside it, the model card ``<stem>.card.png``, ``.pdf``,
``.md``) is written atomically, so a bad input leaves nothing behind. Errors about one request field name
it (``SequoiaError.option``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sequoia_clinic.errors import OptionError
from sequoia_clinic.fileio import (
    ColumnType,
    header_frame,
    merge_column_types,
    read_table_columns,
    read_table_header,
    table_format,
)
from sequoia_clinic.settings import Settings
from sequoia_clinic.signatures.registry import Signature, get_signature
from sequoia_clinic.survival.card import write_model_and_card
from sequoia_clinic.survival.clinical import MissingRule, parse_covariates
from sequoia_clinic.survival.cohort import check_time_unit, match_genes, require_columns
from sequoia_clinic.survival.cutoffs import CutoffSpec
from sequoia_clinic.survival.fit import fit_risk_model
from sequoia_clinic.survival.model import RiskModel
from sequoia_clinic.survival.population import load_population
from sequoia_clinic.survival.predicted import FOLD_COLUMN, check_out_of_fold, expression_shrinkage
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


def cohort_columns(
    request: CalibrateRequest, signature: Signature, header: tuple[str, ...]
) -> dict[str, ColumnType]:
    """The columns of the cohort table the fit reads, and their types; a missing one is a TableError.

    Survival columns, then declared covariates, then the signature's genes (matched through the alias table,
    so an absent gene is named as before), the patient id (and ``fold``) when splits or a measured table are
    given, and the subgroup columns present (an absent one is refused later by the subgroup check).
    """
    frame = header_frame(header)
    require_columns(frame, [request.time_col, request.event_col], request.table)
    covariates = [column for column, _, _ in parse_covariates(",".join(request.covariates))]
    require_columns(frame, covariates, request.table, what="covariate column")
    genes = match_genes(frame, signature.genes, request.table).columns
    plans: list[dict[str, ColumnType]] = [
        {request.time_col: ColumnType.NUMBER, request.event_col: ColumnType.TEXT},
        dict.fromkeys(covariates, ColumnType.TEXT),
        dict.fromkeys(genes.values(), ColumnType.NUMBER),
        {s.column: ColumnType.INFER for s in request.subgroups if s.column in frame.columns},
    ]
    if request.training_splits is not None or request.measured is not None:
        require_columns(frame, [request.id_col], request.table, what="patient id column")
        plans.append({request.id_col: ColumnType.TEXT})
        if request.training_splits is not None and FOLD_COLUMN in frame.columns:
            plans.append({FOLD_COLUMN: ColumnType.NUMBER})
    return merge_column_types(*plans)


def read_cohort_table(request: CalibrateRequest, signature: Signature) -> Any:
    """The cohort table's needed columns only (:func:`cohort_columns`), within the table limits."""
    fmt = table_format(request.table)
    header = read_table_header(fmt)
    return read_table_columns(fmt, cohort_columns(request, signature, header), header)


def read_measured_table(path: Path, signature: Signature, id_col: str) -> Any:
    """The measured table's patient id and signature gene columns only, typed."""
    fmt = table_format(path)
    header = read_table_header(fmt)
    frame = header_frame(header)
    require_columns(frame, [id_col], path, what="patient id column")
    genes = match_genes(frame, signature.genes, path).columns
    plan = merge_column_types({id_col: ColumnType.TEXT}, dict.fromkeys(genes.values(), ColumnType.NUMBER))
    return read_table_columns(fmt, plan, header)


def calibrate(request: CalibrateRequest, settings: Settings) -> CalibrateOutcome:
    """Fit a penalised Cox risk model of the signature's genes on the table, then write it and its card."""
    check_request(request)
    signature = get_signature(request.signature)
    if request.reliable_genes is not None:
        signature = reliable_only(signature, request.reliable_genes, request.reliable_source)
    population = load_population(request.population) if request.population is not None else None
    frame = read_cohort_table(request, signature)
    if request.training_splits is not None:
        check_out_of_fold(frame, request.training_splits, request.id_col, request.table)
    shrinkage = None
    if request.measured is not None:
        shrinkage = expression_shrinkage(
            frame,
            read_measured_table(request.measured, signature, request.id_col),
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
