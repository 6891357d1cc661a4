"""Model bundle manifests: the JSON schema, and parsing a bundle folder into a typed :class:`Bundle`.

A bundle is a folder holding ``manifest.json`` and the files it names (relative paths inside the folder):
the tile-encoder weights, one weights file per aggregator fold, and the gene list in output order. Every
file carries its sha256. The manifest also states the cancer type, whether the weights are trained, the
preprocessing the model expects, its intended use and provenance. Parsing reads the manifest within a size
and nesting limit (finite numbers only) and validates it against
``manifest.schema.json`` and checks that the parts fit together (encoder width = aggregator input, gene
count = aggregator outputs, clusters = aggregator tokens); it does not hash the weights (see store.py).
Weights made by a recipe (demo bundles) are not in the bundle folder: they live in a weights cache folder,
under their sha256 (:meth:`Bundle.file`), so a bundle folder can be read-only.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema

from sequoia_clinic.aggregator.registry import aggregator_kind
from sequoia_clinic.encoders.registry import ENCODERS, EncoderSpec
from sequoia_clinic.errors import BundleError
from sequoia_clinic.fileio import JsonLimitError, parse_json_bounded, sha256_file
from sequoia_clinic.settings import TileOrder
from sequoia_clinic.weightio import verify_sha256, weights_format

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 8 << 20  # a manifest (with a 20,820-gene list at most) is far smaller
MAX_MANIFEST_DEPTH = 16
MAX_GENES = 200_000  # a gene list is ~20,000 symbols (SEQUOIA: 20,820); far more is not a gene list
BUNDLE_FORMAT = "sequoia-clinic-bundle/1"


@cache
def manifest_schema() -> dict[str, Any]:
    text = resources.files("sequoia_clinic.bundles").joinpath("manifest.schema.json").read_text("utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class FileRef:
    """A file of the bundle: relative path, sha256, and (demo bundles) how to regenerate it."""

    file: str
    sha256: str
    generate: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileRef:
        return cls(file=data["file"], sha256=data["sha256"], generate=data.get("generate"))

    @property
    def format(self) -> str:
        return weights_format(Path(self.file))


@dataclass(frozen=True)
class FoldRef:
    fold: int
    weights: FileRef
    source: str | None = None


@dataclass(frozen=True)
class EvaluationRef:
    """The bundle's stored per-gene evaluation (``evaluate``): its file and how it was made."""

    file: FileRef
    unit: str  # "patient" or "slide"
    n_units: int
    n_genes: int
    genes_passing: dict[str, int | None]  # per rule
    training_id: str | None = None


@dataclass(frozen=True)
class Preprocessing:
    """What the model was trained with; inference follows it.

    ``tile_order`` is the rule choosing the used tiles and their k-means order (``settings.TileOrder``):
    ``reference`` for the published SEQUOIA weights (as their training preprocessing did), ``grid`` for
    manifests that do not name one.
    """

    tile_px: int
    target_mpp: float
    max_tiles: int
    n_clusters: int
    sample_seed: int = 99
    kmeans_seed: int = 0
    kmeans_n_init: int = 1
    tile_order: TileOrder = TileOrder.GRID


@dataclass(frozen=True)
class SpecimenMinimums:
    """The smallest specimen the bundle's predictions are meant for (manifest ``adequacy``), with why."""

    min_tissue_mm2: float
    min_tiles: int
    rationale: str = ""


@dataclass(frozen=True)
class Bundle:
    """A parsed model bundle (weights are checksummed when they are read, or by ``verify_bundle``)."""

    name: str
    version: str
    cancer: str
    path: Path
    manifest_sha256: str
    trained: bool
    genes: tuple[str, ...]
    encoder_name: str
    encoder_weights: FileRef
    aggregator: str  # kind, e.g. "vis"
    aggregator_config: Any  # VisConfig / He2rnaConfig
    folds: tuple[FoldRef, ...]
    genes_file: FileRef
    preprocessing: Preprocessing
    intended_use: str
    provenance: dict[str, Any]
    weights_cache: Path | None = None  # where recipe-made weights are generated (Settings.models)
    evaluation: EvaluationRef | None = None  # per-gene cross-validated evaluation, when `evaluate` stored one
    adequacy: SpecimenMinimums | None = None  # declared specimen minimums; None: the tool's defaults apply

    @property
    def encoder_spec(self) -> EncoderSpec:
        return ENCODERS[self.encoder_name]

    def file(self, ref: FileRef) -> Path:
        """A file in the bundle folder, or for recipe-made weights ``<weights_cache>/<sha256>/<name>``."""
        if ref.generate is None:
            return self.path / ref.file
        if self.weights_cache is None:
            raise BundleError(
                f"'{ref.file}' is generated on first use, but no weights cache folder is set",
                self.path,
                fix="Pass Settings(models=ModelSettings(weights_cache_dir=...)) (the CLI uses the user cache).",
            )
        return self.weights_cache / ref.sha256 / PurePosixPath(ref.file).name

    def files(self) -> list[tuple[str, FileRef]]:
        """(role, file) for every file the manifest names."""
        roles = [("encoder weights", self.encoder_weights), ("gene list", self.genes_file)]
        roles += [(f"fold {f.fold} weights", f.weights) for f in self.folds]
        if self.evaluation is not None:
            roles.append(("evaluation", self.evaluation.file))
        return roles


def _read_manifest(path: Path) -> tuple[dict[str, Any], str]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise JsonLimitError(f"is larger than the limit of {MAX_MANIFEST_BYTES >> 20} MiB")
        data = parse_json_bounded(raw, MAX_MANIFEST_DEPTH)
    except FileNotFoundError:
        raise BundleError("no manifest.json here", path.parent, fix="Point at a bundle folder.") from None
    except JsonLimitError as exc:
        raise BundleError(f"the manifest {exc}", path, fix="Restore the manifest.") from None
    except OSError as exc:
        raise BundleError(
            f"the manifest cannot be read ({exc.strerror or type(exc).__name__})", path, fix="Check the file."
        ) from None
    errors = sorted(
        jsonschema.Draft202012Validator(manifest_schema()).iter_errors(data), key=lambda e: e.path
    )
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise BundleError(f"manifest field {where}: {first.message}", path, fix="Fix the manifest.")
    return data, hashlib.sha256(raw).hexdigest()


def _inside(folder: Path, ref: FileRef, manifest: Path, link_allowed: bool = False) -> None:
    """Refuse a file that lies outside the bundle folder (after resolving links).

    ``link_allowed``: the file itself may be a symbolic link to a file elsewhere (``models import
    --symlink`` records this in the manifest for the encoder weights); the link must still sit inside the
    folder, and the file it points to is checked by its sha256 like any other.
    """
    root = folder.resolve()
    place = folder / ref.file
    if link_allowed and place.is_symlink():
        container = place.parent.resolve()
        inside = container == root or root in container.parents
    else:
        inside = root in place.resolve().parents
    if not inside:
        raise BundleError(f"file '{ref.file}' lies outside the bundle folder", manifest)


def read_gene_list(path: Path, column: str = "gene") -> tuple[str, ...]:
    """Gene symbols in output order from a one-column CSV (header ``gene``); duplicates are refused.

    Read with the csv module (a bundle's gene list is one short column; pandas would cost ~0.3 s of
    import on every run), at most ``MAX_GENES`` rows.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if column not in (reader.fieldnames or ()):
                raise BundleError(f"the gene list lacks a '{column}' column", path)
            values: list[str] = []
            for row in reader:
                if len(values) >= MAX_GENES:
                    raise BundleError(f"the gene list has more than {MAX_GENES} rows", path)
                values.append(row[column] or "")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BundleError(f"cannot read the gene list ({exc})", path) from None
    genes = tuple(value.strip() for value in values)
    if any(not g for g in genes) or len(set(genes)) != len(genes):
        raise BundleError("the gene list has empty or duplicate symbols", path)
    return genes


def parse_bundle(folder: Path, weights_cache: Path | None = None) -> Bundle:
    """Parse and cross-check ``folder/manifest.json``; verifies the (small) gene list's checksum.

    ``weights_cache`` is where the bundle's recipe-made weights are generated and read (see :meth:`Bundle.file`).
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    data, digest = _read_manifest(manifest_path)

    encoder_name = data["encoder"]["name"]
    if encoder_name not in ENCODERS:
        raise BundleError(
            f"unknown encoder '{encoder_name}'", manifest_path, fix=f"Use one of {sorted(ENCODERS)}."
        )
    spec = ENCODERS[encoder_name]
    kind = aggregator_kind(data["aggregator"]["kind"])
    config = kind.parse(data["aggregator"]["config"], str(manifest_path))
    folds = tuple(
        FoldRef(fold=f["fold"], weights=FileRef.from_dict(f["weights"]), source=f.get("source"))
        for f in data["aggregator"]["folds"]
    )
    encoder_ref = FileRef.from_dict(data["encoder"]["weights"])
    genes_ref = FileRef(file=data["genes"]["file"], sha256=data["genes"]["sha256"])
    evaluation = _evaluation_ref(data.get("evaluation"))
    extra = () if evaluation is None else (evaluation.file,)
    encoder_linked = data["provenance"].get("encoder_symlinked") is True  # made by `models import --symlink`
    _inside(folder, encoder_ref, manifest_path, link_allowed=encoder_linked)
    for ref in (genes_ref, *(f.weights for f in folds), *extra):
        _inside(folder, ref, manifest_path)
    pre_fields = data["preprocessing"]
    pre = Preprocessing(**{**pre_fields, "tile_order": TileOrder(pre_fields.get("tile_order", "grid"))})

    if spec.out_dim != config.input_dim:
        raise BundleError(
            f"encoder '{encoder_name}' gives {spec.out_dim}-d features but the aggregator expects {config.input_dim}",
            manifest_path,
        )
    if pre.n_clusters != config.num_clusters:
        raise BundleError(
            f"preprocessing.n_clusters={pre.n_clusters} but the aggregator takes {config.num_clusters} tokens",
            manifest_path,
        )

    verify_sha256(folder / genes_ref.file, genes_ref.sha256, what="gene list")
    genes = read_gene_list(folder / genes_ref.file, data["genes"].get("column", "gene"))
    if len(genes) != data["genes"]["count"] or len(genes) != config.num_outputs:
        raise BundleError(
            f"the gene list has {len(genes)} genes; manifest says {data['genes']['count']}, "
            f"the aggregator has {config.num_outputs} outputs",
            manifest_path,
        )
    return Bundle(
        name=data["name"],
        version=data["version"],
        cancer=data["cancer"],
        path=folder,
        manifest_sha256=digest,
        trained=data["trained"],
        genes=genes,
        encoder_name=encoder_name,
        encoder_weights=encoder_ref,
        aggregator=kind.name,
        aggregator_config=config,
        folds=folds,
        genes_file=genes_ref,
        preprocessing=pre,
        intended_use=data["intended_use"],
        provenance=data["provenance"],
        weights_cache=weights_cache,
        evaluation=evaluation,
        adequacy=_minimums(data.get("adequacy")),
    )


def _minimums(data: dict[str, Any] | None) -> SpecimenMinimums | None:
    if data is None:
        return None
    return SpecimenMinimums(
        min_tissue_mm2=float(data["min_tissue_mm2"]),
        min_tiles=int(data["min_tiles"]),
        rationale=str(data.get("rationale", "")),
    )


def _evaluation_ref(data: dict[str, Any] | None) -> EvaluationRef | None:
    if data is None:
        return None
    return EvaluationRef(
        file=FileRef(file=data["file"], sha256=data["sha256"]),
        unit=data["unit"],
        n_units=int(data["n_units"]),
        n_genes=int(data["n_genes"]),
        genes_passing=dict(data["genes_passing"]),
        training_id=data.get("training_id"),
    )


def file_entry(path: Path, folder: Path, generate: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest entry of an existing file: relative path, sha256 and size."""
    entry: dict[str, Any] = {
        "file": path.relative_to(folder).as_posix(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }
    if generate is not None:
        entry["generate"] = generate
    return entry
