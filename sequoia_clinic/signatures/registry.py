"""The registry of breast-cancer gene signatures, and user signature files.

Registry entries are data (``data/registry.json`` + the genefu tables beside it); their names are the
``--signature`` choices. Every signature is returned as a :class:`Signature` whose genes are SEQUOIA
symbols, with the published genes that could not be mapped listed in ``unmapped``.

A user signature is a CSV file with a ``gene`` column and an optional numeric ``weight`` column.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sequoia_clinic.errors import SignatureError
from sequoia_clinic.signatures.mapping import DATA_DIR, GeneMapper, load_mapper

REGISTRY_JSON = DATA_DIR / "registry.json"
FILE_SUFFIXES = (".csv", ".tsv", ".txt")  # a --signature value with one of these is a user signature file


@dataclass(frozen=True)
class Signature:
    """A gene signature mapped to SEQUOIA gene symbols.

    ``weights`` (aligned with ``genes``) are the published per-gene weights, or None when the signature
    has none. ``unmapped`` lists published genes (or probe IDs without a gene) absent from the SEQUOIA
    list. ``renamed`` records (published symbol, SEQUOIA symbol) pairs that differ. ``groups`` holds a
    per-gene label where the signature has one (ER subset, gene group, grade direction). ``formula`` names
    the published scoring rule (recorded in model files; it is not computed: the published rules apply to
    measured array values, not to predicted expression). ``probes`` maps a gene to the array probes it came
    from, where the source is probe-based.
    """

    name: str
    genes: tuple[str, ...]
    weights: tuple[float, ...] | None
    unmapped: tuple[str, ...]
    citation: str
    description: str
    formula: str = "weighted_sum"
    groups: tuple[str, ...] | None = None
    renamed: tuple[tuple[str, str], ...] = ()
    probes: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)
    source: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (used in model files and reports)."""
        return {
            "name": self.name,
            "genes": list(self.genes),
            "weights": None if self.weights is None else list(self.weights),
            "unmapped": list(self.unmapped),
            "renamed": [list(pair) for pair in self.renamed],
            "groups": None if self.groups is None else list(self.groups),
            "formula": self.formula,
            "citation": self.citation,
            "description": self.description,
            "source": self.source,
        }


def _registry(path: Path = REGISTRY_JSON) -> dict[str, dict[str, object]]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def list_signatures() -> tuple[str, ...]:
    """Names of the bundled signatures (the ``--signature`` choices besides a file path)."""
    return tuple(_registry())


def get_signature(name_or_path: str | Path) -> Signature:
    """A bundled signature by name, or a user signature from a CSV path (``gene[,weight]``)."""
    text = str(name_or_path)
    registry = _registry()
    if text in registry:
        return _from_registry(text, registry[text], load_mapper())
    path = Path(text)
    if path.suffix.lower() in FILE_SUFFIXES or path.exists():
        return load_signature_file(path)
    close = difflib.get_close_matches(text, list(registry), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise SignatureError(
        f"unknown signature '{text}'{hint}",
        fix=f"Choose one of {', '.join(registry)}, or pass a CSV file with a 'gene' column.",
    )


def _group_rows(
    frame: pd.DataFrame, entry: Mapping[str, object], mapper: GeneMapper
) -> tuple[dict[str, list[int]], list[str], list[tuple[str, str]]]:
    """Group table rows by mapped SEQUOIA symbol; collect unmapped genes/probes and renames."""
    symbol_col = str(entry["symbol_column"])
    probe_col = entry.get("probe_column")
    rows: dict[str, list[int]] = {}
    unmapped: list[str] = []
    renamed: list[tuple[str, str]] = []
    for index, raw in enumerate(frame[symbol_col]):
        if pd.isna(raw) or not str(raw).strip():
            unmapped.append(
                f"{frame[probe_col].iloc[index]} (probe without gene symbol)" if probe_col else "?"
            )
            continue
        symbol = str(raw).strip()
        mapped = mapper.map(symbol)
        if mapped is None:
            if symbol not in unmapped:
                unmapped.append(symbol)
            continue
        if mapped != symbol and (symbol, mapped) not in renamed:
            renamed.append((symbol, mapped))
        rows.setdefault(mapped, []).append(index)
    return rows, unmapped, renamed


def _mapping(value: object) -> Mapping[str, Any]:
    """A JSON object of the registry (a malformed entry is a bug in the shipped data, not user input)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object in the signature registry, got {type(value).__name__}")
    return value


def _collapse_weights(frame: pd.DataFrame, entry: Mapping[str, object], rows: dict[str, list[int]]):
    """Per-gene weights: summed over probes for wang76 (keeps the score), else mean or sign from group."""
    if "sign_from_group" in entry:
        signs = {str(k): float(v) for k, v in _mapping(entry["sign_from_group"]).items()}
        column = frame[str(entry["group_column"])].astype(str)
        return tuple(signs[column.iloc[idx[0]]] for idx in rows.values())
    weight_col = entry.get("weight_column")
    if not weight_col:
        return None
    values = pd.to_numeric(frame[str(weight_col)], errors="coerce").fillna(0.0).to_numpy()
    reduce = (
        np.sum
        if entry.get("weight_collapse", "sum" if entry.get("probe_column") else "mean") == "sum"
        else np.mean
    )
    return tuple(float(reduce(values[idx])) for idx in rows.values())


def _from_registry(name: str, entry: Mapping[str, object], mapper: GeneMapper) -> Signature:
    frame = pd.read_csv(DATA_DIR / str(entry["file"]))
    rows, unmapped, renamed = _group_rows(frame, entry, mapper)
    groups = None
    if "group_column" in entry:
        labels = {str(k): str(v) for k, v in _mapping(entry.get("group_labels", {})).items()}
        column = frame[str(entry["group_column"])].astype(str)
        groups = tuple(labels.get(column.iloc[idx[0]], column.iloc[idx[0]]) for idx in rows.values())
    probe_col = entry.get("probe_column")
    probes = (
        {g: tuple(str(frame[str(probe_col)].iloc[i]) for i in idx) for g, idx in rows.items()}
        if probe_col
        else {}
    )
    return Signature(
        name=name,
        genes=tuple(rows),
        weights=_collapse_weights(frame, entry, rows),
        unmapped=tuple(unmapped),
        citation=str(entry["citation"]),
        description=str(entry["description"]),
        formula=str(entry.get("formula", "weighted_sum")),
        groups=groups,
        renamed=tuple(renamed),
        probes=probes,
        source=f"bundled: {entry['file']} (genefu, Artistic-2.0)",
    )


MAX_SIGNATURE_BYTES = 16 << 20  # a user signature file larger than this is refused unread
MAX_SIGNATURE_GENES = 25_000  # more rows than genes in the SEQUOIA list (20,820) is not a signature


def load_signature_file(path: str | Path) -> Signature:
    """Read a user signature CSV (``gene`` column, optional numeric ``weight``), mapped to SEQUOIA symbols."""
    path = Path(path)
    if not path.is_file():
        raise SignatureError(
            "signature file not found", path, "Pass a registry name or an existing CSV file."
        )
    if path.stat().st_size > MAX_SIGNATURE_BYTES:
        raise SignatureError(
            f"larger than {MAX_SIGNATURE_BYTES >> 20} MiB", path, "Write one 'gene[,weight]' row per gene."
        )
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            usecols=lambda column: str(column).strip().lower() in ("gene", "weight"),
            nrows=MAX_SIGNATURE_GENES + 1,
        )
        if frame.shape[1] == 0:  # no gene column: read the header for the message
            frame = pd.read_csv(path, sep=sep, dtype=str, nrows=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise SignatureError(
            f"not a readable CSV ({type(exc).__name__})", path, "Write 'gene[,weight]' rows."
        ) from None
    columns = {c.strip().lower(): c for c in frame.columns}
    if "gene" not in columns:
        raise SignatureError(
            f"no 'gene' column (columns: {', '.join(map(str, frame.columns))})",
            path,
            "Name the first column 'gene'.",
        )
    if len(frame) > MAX_SIGNATURE_GENES:
        raise SignatureError(
            f"more than {MAX_SIGNATURE_GENES:,} genes", path, "A signature lists at most the SEQUOIA genes."
        )
    genes = frame[columns["gene"]].fillna("").astype(str).str.strip()
    if (genes == "").any() or genes.empty:
        raise SignatureError("empty gene names (or no rows)", path, "Give one gene symbol per row.")
    duplicated = genes[genes.duplicated()].unique().tolist()
    if duplicated:
        raise SignatureError(
            f"gene listed more than once: {', '.join(duplicated[:5])}", path, "List each gene once."
        )
    weights = None
    if "weight" in columns:
        numeric = pd.to_numeric(frame[columns["weight"]], errors="coerce")
        bad = genes[numeric.isna() | ~np.isfinite(numeric.fillna(0.0))].tolist()
        if bad:
            raise SignatureError(
                f"non-numeric weight for gene {bad[0]}", path, "Give a number in every 'weight' cell."
            )
        weights = numeric.to_numpy(dtype=float)
    mapper = load_mapper()
    kept: list[str] = []
    kept_weights: list[float] = []
    unmapped: list[str] = []
    renamed: list[tuple[str, str]] = []
    for index, symbol in enumerate(genes):
        mapped = mapper.map(symbol)
        if mapped is None:
            unmapped.append(symbol)
            continue
        if mapped in kept:
            raise SignatureError(
                f"genes {symbol} and {mapped} are the same gene", path, "List each gene once."
            )
        if mapped != symbol:
            renamed.append((symbol, mapped))
        kept.append(mapped)
        if weights is not None:
            kept_weights.append(float(weights[index]))
    if not kept:
        raise SignatureError(
            f"none of the {len(genes)} genes is in the SEQUOIA gene list", path, "Use HGNC gene symbols."
        )
    return Signature(
        name=path.stem,
        genes=tuple(kept),
        weights=tuple(kept_weights) if weights is not None else None,
        unmapped=tuple(unmapped),
        citation="user-supplied signature file",
        description=f"User signature from {path.name}: {len(kept)} genes mapped, {len(unmapped)} unmapped.",
        renamed=tuple(renamed),
        source=f"file: {path.name}",
    )
