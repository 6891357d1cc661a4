"""predict: one slide → predicted expression (tissue → tiles → encoder → k-means cluster features → folds).

:func:`predict_slide` is the flow behind ``sequoia-clinic predict``: a pure function of a
:class:`PredictRequest` and the :class:`Settings` (apart from the clock in the timings). It loads the
bundle and its aggregator folds, then calls :func:`run_prediction`, which ``score`` (and later ``cohort``)
call directly with folds they already hold. The bundle decides what the model was trained with (tile size,
target resolution, number of cluster tokens, and by default the tile cap and the sampling/k-means seeds);
the settings decide the run (device, batch size, cache folder) and may override the cap and seeds
(:func:`resolve_feature_settings`). The folds are verified and loaded before any tile is encoded, so a
damaged bundle fails fast.

The slide is opened once and hashed once per run; a thumbnail for the report is taken while it is open
(``PredictRequest.thumbnail_px``). With a cache folder, the tile features, the kept/sampled tiles and the
cluster features are stored under a key made of the slide's content hash, the encoder and its weights'
sha256 and the preprocessing, so a second run skips the tile pixel checks and the encoder. The cache is
best-effort: an unwritable cache folder or a failed write costs a QC warning, never the run. Every QC concern
is a coded :class:`~sequoia_clinic.qc.QCWarning`; the warnings never contain patient identifiers.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sequoia_clinic import __version__
from sequoia_clinic.aggregator.ensemble import FoldEnsemble
from sequoia_clinic.bundles.manifest import Bundle, Preprocessing
from sequoia_clinic.bundles.store import (
    load_bundle,
    load_bundle_encoder,
    load_bundle_ensemble,
    verify_encoder_weights,
)
from sequoia_clinic.encoders.extract import ExtractionStats, extract_features
from sequoia_clinic.encoders.model import computes_in_bf16, reads_ahead, resolve_device
from sequoia_clinic.errors import NoTissueError, OptionError
from sequoia_clinic.features.cache import CacheEntry, FeatureCache, cache_key, notes_from_meta, notes_to_meta
from sequoia_clinic.features.clusters import FILL_RULES, ClusterFeatures, cluster_features
from sequoia_clinic.features.sampling import (
    check_order,
    kmeans_order,
    reference_lattice_shape,
    resolve_tile_order,
)
from sequoia_clinic.fileio import atomic_path, check_output_dir, csv_safe_cell
from sequoia_clinic.native_memory import release_free_memory
from sequoia_clinic.pipeline.slide_notes import corrupt_tiles_check, input_notes
from sequoia_clinic.progress import ProgressLike, reporter
from sequoia_clinic.qc import QCCode, QCWarning
from sequoia_clinic.settings import FeatureSettings, Settings
from sequoia_clinic.slides.base import Slide, SlideInfo
from sequoia_clinic.slides.grid import TileGrid
from sequoia_clinic.slides.opening import open_slide, opened_slide_sha256
from sequoia_clinic.slides.tiling import TileSelection, build_tile_grid, full_batches
from sequoia_clinic.slides.tissue import TissueMask, compute_tissue_mask

DEFAULT_BUNDLE = "sequoia-brca-demo"


@dataclass(frozen=True)
class PredictRequest:
    """What to predict: a slide, the bundle (name or folder), an optional pixel size and gene subset."""

    slide: Path
    bundle: str | Path = DEFAULT_BUNDLE
    mpp: float | None = None  # overrides the slide's recorded pixel size (um/px)
    genes: tuple[str, ...] | None = None  # None: every gene of the bundle, in its output order
    thumbnail_px: int | None = None  # also keep a thumbnail (longest side) taken while the slide is open
    out: Path | None = None  # write the expression row here (.csv or .parquet), checked before any work


@dataclass(frozen=True)
class RunSettings:
    """The preprocessing one prediction actually used: the bundle's values, with explicit overrides."""

    tile_px: int
    target_mpp: float
    mpp_override: float | None
    n_clusters: int
    kmeans_seed: int
    n_init: int
    fill: str
    max_tiles: int
    sample_seed: int
    precision: str  # "fp32" or "bf16": the tile encoder's arithmetic
    tile_order: str  # "grid" or "reference": which tiles k-means gets, in which order

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Prediction:
    """Everything one prediction used and produced (arrays indexed as documented per field)."""

    slide_path: Path
    slide_sha256: str
    slide_info: SlideInfo
    mask: TissueMask
    grid: TileGrid
    # (n_kept,) grid indices of tiles that passed the tissue checks, plus (when the cap stopped the checks
    # early) the candidates never checked: ``grid.checked`` tells which were checked
    kept_indices: np.ndarray
    # (n_used,) grid indices embedded (<= max_tiles), in the order k-means gets them (the tile-order rule);
    # every per-tile array follows this one
    used_indices: np.ndarray
    tile_features: np.ndarray  # (n_used, D) float32, row i = tile used_indices[i]
    clusters: ClusterFeatures  # the (n_clusters, D) aggregator input and how it was made
    qc_warnings: tuple[QCWarning, ...]
    genes: tuple[str, ...]  # the bundle's output order
    expression: np.ndarray  # (n_genes,) float64, mean over folds
    per_fold: np.ndarray  # (n_folds, n_genes) float32
    timings: dict[str, float]
    encoder_name: str
    encoder_weights_sha256: str
    bundle_name: str
    bundle_version: str
    bundle_manifest_sha256: str
    bundle_trained: bool
    cache_hit: bool
    device: str
    settings_used: RunSettings
    extraction: ExtractionStats | None = None  # None on a cache hit
    thumbnail: np.ndarray | None = field(default=None, repr=False)  # (h, w, 3) uint8 when asked for

    @property
    def max_tiles(self) -> int:
        return self.settings_used.max_tiles

    @property
    def sample_seed(self) -> int:
        return self.settings_used.sample_seed

    @property
    def cluster_features(self) -> np.ndarray:
        return self.clusters.features

    @property
    def tile_coords(self) -> np.ndarray:
        """(n_used, 2) level-0 (x, y) corners of the used tiles."""
        return self.grid.coords[self.used_indices]

    def gene_values(self, genes: Sequence[str] | None = None) -> dict[str, float]:
        """{gene: predicted value} for ``genes`` (all genes when None); unknown genes raise OptionError."""
        index = {g: i for i, g in enumerate(self.genes)}
        wanted = list(self.genes) if genes is None else list(genes)
        unknown = [g for g in wanted if g not in index]
        if unknown:
            raise OptionError(
                f"gene(s) not predicted by bundle '{self.bundle_name}': {', '.join(unknown[:5])}"
            )
        return {g: float(self.expression[index[g]]) for g in wanted}


@dataclass(frozen=True)
class _Features:
    grid: TileGrid
    used: np.ndarray
    tile_features: np.ndarray
    clusters: ClusterFeatures | None
    extraction: ExtractionStats | None
    cache_hit: bool
    # the QC notes reading the slide's pixels gave (pixel conversion, damaged stored tiles): kept in the
    # cache entry, so that a hit (which decodes no tile) reports what the run that made it found
    slide_notes: tuple[QCWarning, ...] = ()


def resolve_feature_settings(features: FeatureSettings, pre: Preprocessing) -> FeatureSettings:
    """The feature settings of one run: the bundle's preprocessing is the default, an explicit value wins.

    ``max_tiles``, ``sample_seed``, ``kmeans_seed`` and ``kmeans_n_init`` left None in ``features`` take the
    bundle's value (its manifest falls back to the SEQUOIA values 99, 0 and 1 for the optional seeds and
    n_init; ``max_tiles`` it must state, 4000 for SEQUOIA); a number set there (e.g. ``--max-tiles``) is
    kept. ``n_clusters`` always takes the bundle's value: it is the aggregator's number of input tokens.
    Every field of the result is a number.
    """

    def pick(override: int | None, bundle_value: int) -> int:
        return int(bundle_value if override is None else override)

    resolved = dataclasses.replace(
        features,
        max_tiles=pick(features.max_tiles, pre.max_tiles),
        sample_seed=pick(features.sample_seed, pre.sample_seed),
        kmeans_seed=pick(features.kmeans_seed, pre.kmeans_seed),
        kmeans_n_init=pick(features.kmeans_n_init, pre.kmeans_n_init),
        n_clusters=pre.n_clusters,
    )
    for name in ("max_tiles", "kmeans_n_init"):
        if getattr(resolved, name) < 1:
            raise OptionError(f"{name} must be at least 1, got {getattr(resolved, name)}")
    if resolved.empty_row_fill not in FILL_RULES:
        raise OptionError(
            f"unknown empty-row fill '{resolved.empty_row_fill}'", fix=f"Use one of {FILL_RULES}."
        )
    return resolved


def _resolved(value: int | None) -> int:
    """A feature setting after :func:`effective_settings` (which fills every None from the bundle)."""
    if value is None:
        raise RuntimeError("feature settings were not resolved against the bundle")
    return value


def effective_settings(settings: Settings, bundle: Bundle) -> Settings:
    """``settings`` with the bundle's training-time tile size and resolution and the resolved features."""
    pre = bundle.preprocessing
    tiles = dataclasses.replace(settings.tiles, tile_px=pre.tile_px, target_mpp=pre.target_mpp)
    features = resolve_feature_settings(settings.features, pre)
    return dataclasses.replace(settings, tiles=tiles, features=features)


def _tile_key(slide_hash: str, mpp: float | None, bundle: Bundle, settings: Settings, precision: str) -> str:
    tiles = dataclasses.asdict(settings.tiles)
    for runtime_only in ("batch_size", "read_threads", "tile_cache_mb"):
        tiles.pop(runtime_only, None)
    return cache_key(
        {
            "sequoia_clinic": __version__,  # a new release may change tissue/tile decisions: recompute
            "slide_sha256": slide_hash,
            "mpp_override": mpp,
            "tissue": dataclasses.asdict(settings.tissue),
            "tiles": tiles,
            "encoder": bundle.encoder_name,
            "encoder_weights_sha256": bundle.encoder_weights.sha256,
            "precision": precision,
            "max_tiles": settings.features.max_tiles,
            "sample_seed": settings.features.sample_seed,
            "tile_order": resolve_tile_order(settings.features.tile_order, bundle.preprocessing.tile_order),
        }
    )


def _cluster_params(settings: Settings) -> dict[str, Any]:
    f = settings.features
    return {
        "n_clusters": f.n_clusters,
        "kmeans_seed": f.kmeans_seed,
        "n_init": f.kmeans_n_init,
        "fill": f.empty_row_fill,
    }


def _from_cache(
    cache: FeatureCache | None, key: str, grid: TileGrid, settings: Settings, weights_sha256: str
) -> tuple[_Features | None, QCWarning | None]:
    """The cached features for ``key`` (or None), and a QC note when a stored entry was refused.

    An entry that is corrupt, fails its checksum, holds non-finite numbers or was made by other encoder
    weights is never used: the features are recomputed (and the entry rewritten).
    """
    if cache is None:
        return None, None
    lookup = cache.load(key, weights_sha256)
    problem = lookup.problem
    if lookup.entry is not None:
        try:
            return _features_from_entry(lookup.entry, grid, settings), None
        except (KeyError, TypeError, ValueError):  # an entry from another layout: recompute
            problem = "the entry does not fit this version's layout"
    if problem is None:
        return None, None
    return None, QCWarning(
        QCCode.CACHE_ENTRY_REJECTED,
        f"feature cache entry not used ({problem}); the features were recomputed",
    )


def _features_from_entry(entry: CacheEntry, grid: TileGrid, settings: Settings) -> _Features | None:
    a = entry.arrays
    if a["coords"].shape != grid.coords.shape or not np.array_equal(a["coords"], grid.coords):
        return None  # the tile grid changed (e.g. a new slides version): recompute
    grid = dataclasses.replace(grid, keep=a["keep"].astype(bool), pixel_checked=True)
    clusters = None
    if entry.meta.get("cluster_params") == _cluster_params(settings):
        clusters = ClusterFeatures(
            features=a["cluster_features"],
            labels=a["cluster_labels"],
            method=entry.meta["cluster_method"],
            n_populated=int(entry.meta["n_populated"]),
            filled_rows=tuple(int(r) for r in a["filled_rows"]),
            fill=settings.features.empty_row_fill,
            warnings=tuple(
                QCWarning(QCCode(code), str(text)) for code, text in entry.meta["cluster_warnings"]
            ),
        )
    notes = notes_from_meta(entry.meta["slide_notes"])
    return _Features(grid, a["used_indices"], a["tile_features"], clusters, None, True, notes)


def _open_cache(settings: Settings) -> tuple[FeatureCache | None, str | None]:
    """The feature cache (None when disabled) and why it cannot be written (None when it can).

    An unwritable cache is still read: a read-only, pre-filled cache folder keeps serving hits.
    """
    if settings.cache_dir is None:
        return None, None
    cache = FeatureCache(Path(settings.cache_dir))
    return cache, cache.write_problem()


def _save_cache(
    cache: FeatureCache | None,
    problem: str | None,
    key: str,
    feats: _Features,
    clusters: ClusterFeatures,
    settings: Settings,
    weights_sha256: str,
) -> QCWarning | None:
    """Store the entry, best-effort: returns a QC warning instead of failing when it cannot be written."""
    if cache is None:
        return None
    if problem is None:
        try:
            _write_entry(cache, key, feats, clusters, settings, weights_sha256)
            return None
        except OSError as exc:  # disk full, permissions changed mid-run ...: the result does not depend on it
            problem = exc.strerror or type(exc).__name__
    return QCWarning(
        QCCode.CACHE_NOT_WRITTEN, f"feature cache not written: {problem}; the result is unaffected"
    )


def _write_entry(
    cache: FeatureCache,
    key: str,
    feats: _Features,
    clusters: ClusterFeatures,
    settings: Settings,
    settings_weights_sha256: str,
) -> None:
    arrays = {
        "coords": feats.grid.coords,
        "keep": feats.grid.keep,
        "used_indices": feats.used,
        "tile_features": feats.tile_features,
        "cluster_features": clusters.features,
        "cluster_labels": clusters.labels,
        "filled_rows": np.asarray(clusters.filled_rows, dtype=np.int64),
    }
    meta = {
        "cluster_params": _cluster_params(settings),
        "cluster_method": clusters.method,
        "n_populated": clusters.n_populated,
        "cluster_warnings": [[w.code.value, w.message] for w in clusters.warnings],
        "slide_notes": notes_to_meta(feats.slide_notes),
    }
    cache.save(key, arrays, meta, weights_sha256=settings_weights_sha256)


def _without_corrupt_tiles(
    slide: Slide, grid: TileGrid, used: np.ndarray, tile_features: np.ndarray
) -> tuple[np.ndarray, np.ndarray, QCWarning | None]:
    """Leave out the used tiles that overlap a stored tile that could not be decoded (read as white).

    The slide refuses itself past its allowance of damaged tiles; below it the prediction goes on without
    the tiles over them, and says how many stored tiles were damaged.
    """
    keep, note = corrupt_tiles_check(slide, grid, used)
    if note is None:
        return used, tile_features, None
    if not keep.any():
        raise NoTissueError(
            "every usable tile overlaps a stored tile that cannot be decoded",
            slide.path,
            "The file is damaged; copy or export the slide again.",
        )
    return np.asarray(used)[keep], np.asarray(tile_features)[keep], note


def _qc_warnings(
    bundle: Bundle, info: SlideInfo, grid: TileGrid, clusters: ClusterFeatures, cache_note: QCWarning | None
) -> tuple[QCWarning, ...]:
    notes = []
    if not bundle.trained:
        notes.append(
            QCWarning(
                QCCode.UNTRAINED_BUNDLE,
                f"bundle '{bundle.name}' is NOT trained (demo weights): the predicted values are meaningless "
                "and must not be interpreted",
            )
        )
    if info.mpp_source == "objective-power":
        notes.append(
            QCWarning(
                QCCode.MPP_ESTIMATED,
                "the pixel size was inferred from the objective power, not recorded by the scanner; "
                "check it (pass --mpp to set it)",
            )
        )
    if grid.resampled:
        notes.append(
            QCWarning(
                QCCode.TILES_RESAMPLED,
                f"no pyramid level is at {grid.target_mpp} um/px: tiles were resampled from "
                f"{grid.level_mpp:.3f} um/px",
            )
        )
    notes.extend(clusters.warnings)
    if cache_note is not None:
        notes.append(cache_note)
    return tuple(notes)


def _encode(
    slide: Any,
    grid: TileGrid,
    bundle: Bundle,
    settings: Settings,
    device: torch.device,
    progress: ProgressLike,
    timings: dict[str, float],
) -> tuple[TileGrid, np.ndarray, np.ndarray, ExtractionStats, str]:
    """Select and embed: (grid with keep flags, used indices in k-means order, features, stats, precision).

    Candidates are checked in the tile order's check order until ``max_tiles`` pass (``features/sampling``),
    and the tiles that pass go to the encoder as they are found: the pixels decoded for the check are the
    ones encoded, so each used tile is decoded once, and the next chunk is read and checked while one is
    encoded. The encoder is loaded when the first tile passes. Feature rows follow the returned indices.
    """
    f = settings.features
    if f.max_tiles is None or f.sample_seed is None:
        raise RuntimeError("the feature settings were not resolved against the bundle")
    order = resolve_tile_order(f.tile_order, bundle.preprocessing.tile_order)
    reference = reference_lattice_shape(grid.level_size, grid.read_px)
    sequence = check_order(order, grid.kept_indices, grid.grid_shape, reference, f.sample_seed)
    batch = settings.encoder_batch_size or bundle.encoder_spec.batch_size
    tiles = dataclasses.replace(settings.tiles, batch_size=batch)
    selection = TileSelection(slide, grid, sequence, f.max_tiles, tiles)
    overlap = reads_ahead(device)  # on the CPU, reading and encoding take turns on all cores
    report = reporter(progress)
    report.start("encoding tiles", min(f.max_tiles, sequence.size))
    encoder, indices, features = None, [], []
    start = time.perf_counter()
    # on an error, the selection's reading stops before we return
    with contextlib.closing(selection.chunks(ahead=overlap)) as chunks:
        for batches in full_batches(chunks, tiles.batch_size):
            if encoder is None:
                t0 = time.perf_counter()
                encoder = load_bundle_encoder(bundle, device, settings)
                timings["load_encoder"] = time.perf_counter() - t0
            ready = np.concatenate([b.indices for b in batches])
            rows, _ = extract_features(
                encoder, batches, ready, queue_size=settings.models.loader_queue, overlap=overlap
            )
            indices.append(ready)
            features.append(rows)
            report.advance(len(ready))
    report.finish()
    grid = selection.result()  # NoTissueError when no tile passed
    seconds = time.perf_counter() - start - timings.get("load_encoder", 0.0)
    timings["select_tiles"] = selection.seconds  # reading and checking, overlapping with "encode"
    found = np.concatenate(indices)
    if len(found) < f.min_tiles:
        raise NoTissueError(
            f"only {len(found)} tiles hold tissue; at least {f.min_tiles} are required",
            slide.path,
            fix="Check the slide and its pixel size (--mpp), or lower the minimum.",
        )
    used = kmeans_order(order, found, grid.coords)
    row_of = {int(i): r for r, i in enumerate(found)}
    tile_features = np.concatenate(features)[[row_of[int(i)] for i in used]]
    stats = ExtractionStats(len(used), seconds, len(used) / seconds if seconds > 0 else float("inf"))
    timings["encode"] = seconds
    if encoder is None:  # cannot happen: result() raised unless a tile passed
        raise RuntimeError("tiles passed the pixel check but none was encoded")
    return grid, used, tile_features, stats, _precision(encoder.uses_bf16)


def _precision(bf16: bool) -> str:
    return "bf16" if bf16 else "fp32"


def load_folds(bundle: Bundle, settings: Settings) -> FoldEnsemble:
    """The bundle's aggregator folds on the settings' device: each file verified against the manifest now,
    the weights read at the first prediction, after the tiles are encoded and the encoder is freed (so a
    slide's peak memory holds one of the two sets of weights, not both)."""
    return load_bundle_ensemble(bundle, resolve_device(settings.device), settings, deferred=True)


def open_request_slide(request: PredictRequest) -> Slide:
    """Open the request's slide: its path, format and resource budget are checked before any other work.

    Pass the result to :func:`run_prediction` (``opened``) and close it afterwards.
    """
    return open_slide(Path(request.slide), mpp=request.mpp)


def predict_slide(request: PredictRequest, settings: Settings, progress: ProgressLike = None) -> Prediction:
    """The ``predict`` flow: check the output and the slide, load and check the bundle, predict every gene
    for one slide, and write the row of the requested genes (atomically) when ``request.out`` is set."""
    if request.out is not None:
        check_expression_output(request.out)
    with open_request_slide(request) as slide:  # a bad slide is refused before the bundle is loaded
        bundle = load_bundle(request.bundle, settings)
        if request.genes is not None:
            check_genes(request.genes, bundle)
        folds = load_folds(bundle, settings)
        prediction = run_prediction(
            request, bundle, folds, settings, progress, opened=slide, keep_folds=False
        )
    if request.out is not None:
        write_expression_row(prediction, list(request.genes or prediction.genes), request.out)
    return prediction


OUTPUT_SUFFIXES = (".csv", ".parquet")


def check_expression_output(out: Path) -> None:
    """Refuse (before any work) an output that is not a .csv/.parquet file in a writable folder."""
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OptionError(
            f"{out}: unsupported file type", fix="Use a .csv or .parquet file name.", option="out"
        )
    if out.is_dir():
        raise OptionError(f"{out} is a folder", fix="Give a file name such as expression.csv.", option="out")
    check_output_dir(out.parent)


def write_expression_row(prediction: Prediction, genes: list[str], out: Path) -> None:
    """One row: identifiers and QC counts, then the predicted value of each gene (no slide file name: it may
    carry a patient identifier; the content hash identifies the slide)."""
    meta = {
        "slide_sha256": prediction.slide_sha256,
        "bundle": prediction.bundle_name,
        "bundle_version": prediction.bundle_version,
        "bundle_trained": prediction.bundle_trained,
        "tiles_used": len(prediction.used_indices),
        "clusters_populated": prediction.clusters.n_populated,
    }
    row = {**meta, **prediction.gene_values(genes)}
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":  # the csv module: one row needs no pandas (~100 MB in a worker)
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow([csv_safe_cell(name) for name in row])
                writer.writerow([_csv_value(value) for value in row.values()])
        else:
            import pandas as pd

            pd.DataFrame([row]).to_parquet(tmp, index=False)


def _csv_value(value: object) -> object:
    """A cell as pandas' ``to_csv(float_format="%.6g")`` writes it (text neutralised, floats to 6 digits)."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return csv_safe_cell(value)


def check_genes(genes: Sequence[str], bundle: Bundle) -> None:
    """Refuse an empty gene list or genes the bundle does not predict (one line, the first few named)."""
    if not genes:
        raise OptionError(
            "no gene given", fix="Pass gene symbols separated by commas, e.g. ESR1,ERBB2.", option="genes"
        )
    known = set(bundle.genes)
    unknown = [g for g in genes if g not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise OptionError(
            f"gene(s) not predicted by bundle '{bundle.name}': {shown}",
            fix="Use HGNC symbols from the bundle's genes.csv.",
            option="genes",
        )


def run_prediction(
    request: PredictRequest,
    bundle: Bundle,
    ensemble: FoldEnsemble,
    settings: Settings,
    progress: ProgressLike = None,
    opened: Slide | None = None,
    keep_folds: bool = True,
) -> Prediction:
    """Predict the bundle's genes for one slide (fold-mean) with folds already loaded.

    The slide is opened once: its content hash, tissue mask, tile grid, tile pixels and (when asked for)
    the report thumbnail all come from that one opening. ``opened`` is that opening when the caller made
    it already (:func:`open_request_slide`, to refuse a bad slide before any other work); the caller then
    closes it. Otherwise the slide is opened, and closed, here. ``keep_folds=False`` (a caller that predicts
    once) reads deferred folds one at a time and drops each after use (``FoldEnsemble.predict``).
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}
    settings = effective_settings(settings, bundle)
    device = resolve_device(settings.device)
    # The encoder's rule, known before it is loaded (and refusing bf16 on a device without it, early).
    precision = _precision(computes_in_bf16(device, settings.precision))
    cache, cache_problem = _open_cache(settings)
    slide_path = Path(request.slide)
    mpp = request.mpp

    thumbnail = None
    opening = contextlib.nullcontext(opened) if opened is not None else open_slide(slide_path, mpp=mpp)
    with opening as slide:
        t0 = time.perf_counter()
        slide_hash = opened_slide_sha256(slide)
        timings["hash_slide"] = time.perf_counter() - t0
        info = slide.info
        t0 = time.perf_counter()
        mask = compute_tissue_mask(slide, settings.tissue)
        grid = build_tile_grid(slide, mask, settings.tiles)
        timings["tissue_and_grid"] = time.perf_counter() - t0
        key = _tile_key(slide_hash, mpp, bundle, settings, precision)
        feats, cache_read_note = _from_cache(cache, key, grid, settings, bundle.encoder_weights.sha256)
        if feats is not None:  # a cache hit never skips checking the encoder weights (memoised hash)
            verify_encoder_weights(bundle, settings)
        if feats is None:
            grid, used, tile_features, stats, actual = _encode(
                slide, grid, bundle, settings, device, progress, timings
            )
            if actual != precision:  # cannot happen while both use computes_in_bf16; never mislabel
                precision, key = actual, _tile_key(slide_hash, mpp, bundle, settings, actual)
            release_free_memory()  # the encoder's and the tile buffers' freed pages, before k-means
            used, tile_features, corrupt_note = _without_corrupt_tiles(slide, grid, used, tile_features)
            notes = input_notes(info, corrupt_note)
            feats = _Features(grid, used, tile_features, None, stats, False, notes)
        if request.thumbnail_px is not None:
            t0 = time.perf_counter()
            thumbnail = slide.thumbnail(request.thumbnail_px)
            timings["thumbnail"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    clusters = feats.clusters
    cache_note = cache_read_note
    if clusters is None:
        f = settings.features
        clusters = cluster_features(
            feats.tile_features,
            f.n_clusters,
            _resolved(f.kmeans_seed),
            _resolved(f.kmeans_n_init),
            f.empty_row_fill,
        )
        cache_note = (
            _save_cache(cache, cache_problem, key, feats, clusters, settings, bundle.encoder_weights.sha256)
            or cache_note
        )
    timings["cluster"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    per_fold, mean = ensemble.predict(clusters.features, keep=keep_folds)
    timings["predict"] = time.perf_counter() - t0
    if not np.isfinite(mean).all():
        raise RuntimeError("the aggregator produced non-finite predictions from finite input")
    timings["total"] = time.perf_counter() - start

    features = settings.features
    return Prediction(
        slide_path=slide_path,
        slide_sha256=slide_hash,
        slide_info=info,
        mask=mask,
        grid=feats.grid,
        kept_indices=feats.grid.kept_indices,
        used_indices=np.asarray(feats.used, dtype=np.int64),
        tile_features=feats.tile_features,
        clusters=clusters,
        qc_warnings=_qc_warnings(bundle, info, feats.grid, clusters, cache_note) + feats.slide_notes,
        genes=bundle.genes,
        expression=mean[0],
        per_fold=per_fold[:, 0, :],
        timings=timings,
        encoder_name=bundle.encoder_name,
        encoder_weights_sha256=bundle.encoder_weights.sha256,
        bundle_name=bundle.name,
        bundle_version=bundle.version,
        bundle_manifest_sha256=bundle.manifest_sha256,
        bundle_trained=bundle.trained,
        cache_hit=feats.cache_hit,
        device=str(device),
        settings_used=RunSettings(
            tile_px=settings.tiles.tile_px,
            target_mpp=settings.tiles.target_mpp,
            mpp_override=mpp,
            n_clusters=features.n_clusters,
            kmeans_seed=_resolved(features.kmeans_seed),
            n_init=_resolved(features.kmeans_n_init),
            fill=features.empty_row_fill,
            max_tiles=_resolved(features.max_tiles),
            sample_seed=_resolved(features.sample_seed),
            precision=precision,
            tile_order=str(resolve_tile_order(features.tile_order, bundle.preprocessing.tile_order)),
        ),
        extraction=feats.extraction,
        thumbnail=thumbnail,
    )
