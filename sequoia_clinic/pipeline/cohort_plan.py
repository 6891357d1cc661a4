"""The cohort plan: what is to be computed, independent of where it runs, and the result key of each slide.

A slide's result is keyed by content, never by path, host or device::

    result_key = sha256(canonical JSON {format, software version, slide content sha256, patient_id, mpp
                        override, bundle manifest sha256, risk model sha256, report formats,
                        output-affecting settings})

The output-affecting settings are the tissue, tile and (bundle-resolved) feature settings, the requested
encoder precision and the report layout; run-time knobs (device, batch size, threads, cache folder) are
not in the key. The patient ID is, because it is written into the slide's report. The
:class:`KeyContext` holds everything but the per-slide parts; it is computed once per run and stored in
``plan.json`` with the manifest rows, so ``cohort table`` can rebuild the tables without the options.

The slide content hash is computed where the slide is read (in the isolated child) and remembered in the
attempt ledger with a cheap stat fingerprint of the slide's files (sizes and modification times): a
re-run does not re-hash a slide whose fingerprint is unchanged, and a replaced slide gets a new key.
``--shard i/N`` takes every N-th row of the plan sorted by ``slide_id``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sequoia_clinic import __version__
from sequoia_clinic.errors import OptionError
from sequoia_clinic.pipeline.cohort_manifest import Manifest, ManifestRow
from sequoia_clinic.settings import Settings
from sequoia_clinic.units import TimeUnit

RESULT_FORMAT = "sequoia-clinic/cohort-result/1"
PLAN_FORMAT = "sequoia-clinic/cohort-plan/1"
RUNTIME_TILE_FIELDS = ("batch_size", "read_threads", "tile_cache_mb")  # speed only: not in the key


@dataclass(frozen=True)
class Shard:
    """``--shard i/N``: the i-th of N deterministic parts of the plan (1-based)."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            index, count = 0, 0
        if count < 1 or not 1 <= index <= count:
            raise OptionError(
                f"'{text}' is not i/N with 1 <= i <= N",
                fix="Pass e.g. --shard 2/8 (in a SLURM array: --shard $((SLURM_ARRAY_TASK_ID+1))/8).",
                option="shard",
            )
        return cls(index, count)

    def select(self, rows: tuple[ManifestRow, ...]) -> tuple[ManifestRow, ...]:
        """This shard's rows: round robin over the rows sorted by slide_id (the same split everywhere)."""
        ordered = sorted(rows, key=lambda r: r.slide_id)
        chosen = {r.slide_id for k, r in enumerate(ordered) if k % self.count == self.index - 1}
        return tuple(r for r in rows if r.slide_id in chosen)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class KeyContext:
    """The run-wide ingredients of every result key, and where the workers find the models."""

    bundle_path: str  # resolved bundle folder (workers load it from there)
    bundle_manifest_sha256: str
    bundle_trained: bool
    risk_model_path: str
    risk_model_sha256: str
    formats: tuple[str, ...]
    settings: str  # canonical JSON of the output-affecting settings
    software_version: str = __version__
    result_format: str = RESULT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyContext:
        return cls(**{**data, "formats": tuple(data["formats"])})


def canonical_json(value: Any) -> str:
    """Sorted-key compact JSON; Paths and enums as their text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def key_settings(effective: Settings) -> dict[str, Any]:
    """The output-affecting part of settings already resolved against the bundle (predict.effective_settings)."""
    tiles = dataclasses.asdict(effective.tiles)
    for name in RUNTIME_TILE_FIELDS:
        tiles.pop(name, None)
    report = dataclasses.asdict(effective.report)
    report.pop("pseudonym_key", None)
    return {
        "tissue": dataclasses.asdict(effective.tissue),
        "tiles": tiles,
        "features": dataclasses.asdict(effective.features),
        "precision": str(effective.precision),
        "report": report,
    }


def result_key(slide_sha256: str, patient_id: str, mpp: float | None, context: KeyContext) -> str:
    """The content key of one slide's result (see the module docstring)."""
    payload = {
        "format": context.result_format,
        "software_version": context.software_version,
        "slide_sha256": slide_sha256,
        "patient_id": patient_id,
        "mpp": mpp,
        "bundle_manifest_sha256": context.bundle_manifest_sha256,
        "risk_model_sha256": context.risk_model_sha256,
        "formats": list(context.formats),
        "settings": context.settings,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def stat_fingerprint(path: Path) -> str:
    """A cheap fingerprint of a slide's files (names, sizes, modification times); '' when unreadable.

    A DICOM slide (a folder, or one ``.dcm`` whose siblings belong to the series) is fingerprinted by its
    folder's regular files.
    """
    path = Path(path)
    try:
        if path.is_dir() or path.suffix.lower() == ".dcm":
            folder = path if path.is_dir() else path.parent
            entries = sorted(
                (e.name, e.stat().st_size, e.stat().st_mtime_ns)
                for e in os.scandir(folder)
                if e.is_file(follow_symlinks=True)
            )
            return "dir:" + hashlib.sha256(canonical_json(entries).encode()).hexdigest()[:32]
        info = path.stat()
        return f"file:{info.st_size}:{info.st_mtime_ns}"
    except OSError:
        return ""


@dataclass(frozen=True)
class Plan:
    """What a cohort run computes: the manifest rows and the key context (stored as ``plan.json``)."""

    manifest: str  # the manifest file, for messages
    rows: tuple[ManifestRow, ...]
    clinical_columns: tuple[str, ...]
    has_outcomes: bool
    time_unit: TimeUnit | None
    context: KeyContext
    genes: tuple[str, ...]  # the bundle's output order (expression.parquet columns)
    signature_genes: tuple[str, ...]  # the risk model's genes (cohort table columns)
    group_names: tuple[str, ...]  # the risk model's groups, lowest risk first
    endpoint: str = "event"  # name of the event, for the survival figures' labels

    @classmethod
    def build(
        cls,
        manifest: Manifest,
        context: KeyContext,
        genes: tuple[str, ...],
        signature_genes: tuple[str, ...],
        group_names: tuple[str, ...],
        endpoint: str = "event",
    ) -> Plan:
        return cls(
            manifest=str(manifest.path),
            rows=manifest.rows,
            clinical_columns=manifest.clinical_columns,
            has_outcomes=manifest.has_outcomes,
            time_unit=manifest.time_unit,
            context=context,
            genes=genes,
            signature_genes=signature_genes,
            group_names=group_names,
            endpoint=endpoint,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "manifest": self.manifest,
            "clinical_columns": list(self.clinical_columns),
            "has_outcomes": self.has_outcomes,
            "time_unit": None if self.time_unit is None else self.time_unit.value,
            "context": self.context.to_dict(),
            "signature_genes": list(self.signature_genes),
            "group_names": list(self.group_names),
            "endpoint": self.endpoint,
            "rows": [_row_dict(r) for r in self.rows],
            "genes": list(self.genes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(
            manifest=data["manifest"],
            rows=tuple(_row_from(r) for r in data["rows"]),
            clinical_columns=tuple(data["clinical_columns"]),
            has_outcomes=bool(data["has_outcomes"]),
            time_unit=None if data["time_unit"] is None else TimeUnit(data["time_unit"]),
            context=KeyContext.from_dict(data["context"]),
            genes=tuple(data["genes"]),
            signature_genes=tuple(data["signature_genes"]),
            group_names=tuple(data["group_names"]),
            endpoint=str(data["endpoint"]),
        )


def _row_dict(row: ManifestRow) -> dict[str, Any]:
    data = dataclasses.asdict(row)
    data["slide"] = str(row.slide)
    data["clinical"] = [list(pair) for pair in row.clinical]
    return data


def _row_from(data: dict[str, Any]) -> ManifestRow:
    return ManifestRow(
        **{
            **data,
            "slide": Path(data["slide"]),
            "clinical": tuple((str(k), str(v)) for k, v in data["clinical"]),
        }
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): value}


def plan_changes(old: Plan, new: Plan) -> list[str]:
    """What differs between a stored plan and this run's (empty when nothing): rows and settings, named."""
    changes: list[str] = []
    before = {r.slide_id: r for r in old.rows}
    after = {r.slide_id: r for r in new.rows}
    added = [k for k in after if k not in before]
    removed = [k for k in before if k not in after]
    changed = [k for k in after if k in before and before[k] != after[k]]
    for word, ids in (("added", added), ("removed", removed), ("changed", changed)):
        if ids:
            shown = ", ".join(ids[:5]) + (f" (+{len(ids) - 5} more)" if len(ids) > 5 else "")
            changes.append(f"{len(ids)} manifest row(s) {word}: {shown}")
    old_ctx = _flatten(old.context.to_dict() | {"settings": json.loads(old.context.settings)})
    new_ctx = _flatten(new.context.to_dict() | {"settings": json.loads(new.context.settings)})
    for name in sorted(set(old_ctx) | set(new_ctx)):
        if old_ctx.get(name) != new_ctx.get(name):
            changes.append(f"{name}: {old_ctx.get(name)!r} -> {new_ctx.get(name)!r}")
    if old.time_unit != new.time_unit:
        changes.append(f"time unit: {old.time_unit} -> {new.time_unit}")
    if old.endpoint != new.endpoint:
        changes.append(f"endpoint: {old.endpoint!r} -> {new.endpoint!r}")
    return changes
