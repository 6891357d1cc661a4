"""features: the cluster features of every slide of a manifest, for training (``train``) and its checks.

A training manifest is a CSV/TSV/Parquet table with one row per slide, in the cohort manifest's layout:

* ``slide``: a slide file or DICOM folder, **or** a reference feature file ``<slide>.h5`` (made by the
  SEQUOIA preprocessing, dataset ``cluster_features``, ``num_clusters × dim``);
* ``patient_id`` (required); ``slide_id`` (optional, unique; default the file name without extension);
* ``mpp`` (optional pixel-size override); ``features`` (optional: a reference ``.h5`` for that row, used
  instead of encoding its slide). Relative paths are relative to the manifest's folder.

A slide's features come from the same machinery as ``predict``/``score``/``cohort``
(:func:`sequoia_clinic.pipeline.predict.run_prediction` with the features bundle), so they are read from,
or written to, the same per-slide feature cache. Reference ``.h5`` features are used as they are; rows
that are not finite (empty k-means clusters in the reference code, sequoia-pub issue #20) are replaced
by the mean of the slide's finite rows and counted. The whole manifest is checked before any slide is
opened; every problem is listed in one error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sequoia_clinic.bundles.manifest import Bundle
from sequoia_clinic.errors import SequoiaError, SlideFormatError, TableError
from sequoia_clinic.pipeline.predict import PredictRequest, run_prediction
from sequoia_clinic.progress import ProgressLike, reporter
from sequoia_clinic.settings import Settings

H5_DATASET = "cluster_features"
H5_SUFFIXES = (".h5", ".hdf5")
MAX_LISTED = 20


@dataclass(frozen=True)
class TrainingSlide:
    row: int  # 1-based data row of the manifest
    slide_id: str
    patient_id: str
    slide: Path | None  # None when the row names only a feature file
    features: Path | None  # a reference .h5, used instead of encoding the slide
    mpp: float | None = None


@dataclass(frozen=True, eq=False)
class CohortFeatures:
    slides: tuple[TrainingSlide, ...]
    features: np.ndarray  # (slides, num_clusters, dim) float32
    sources: tuple[str, ...]  # per slide: "cache", "encoded" or "reference-h5"
    filled_rows: int  # non-finite reference rows replaced by the slide's mean row


def _is_h5(path: Path) -> bool:
    return path.suffix.lower() in H5_SUFFIXES


def _path(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _default_id(text: str) -> str:
    name = Path(text.rstrip("/\\")).name
    return Path(name).stem or name


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TableError("manifest not found", path, fix="Pass an existing CSV or Parquet file.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            frame = frame.astype(object).where(frame.notna(), "").astype(str)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TableError(
            f"cannot read the manifest ({type(exc).__name__})", path, fix="Give a CSV or Parquet file."
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda column: column.str.strip())


def read_training_manifest(path: Path) -> tuple[TrainingSlide, ...]:
    """Read and check the manifest (every problem in one TableError)."""
    path = Path(path)
    frame = _read_frame(path)
    problems = [f"missing column '{c}'" for c in ("slide", "patient_id") if c not in frame.columns]
    if frame.empty:
        problems.append("the manifest has no rows")
    if problems:
        raise TableError(
            "; ".join(problems), path, fix="Columns: slide, patient_id [, slide_id, mpp, features]."
        )
    base = path.resolve().parent
    slides: list[TrainingSlide] = []
    for index, record in enumerate(frame.to_dict(orient="records"), start=1):
        cell = {str(k): str(v) for k, v in record.items()}
        where = f"row {index}"
        slide_text, features_text = cell.get("slide", ""), cell.get("features", "")
        slide = _path(slide_text, base) if slide_text else None
        features = _path(features_text, base) if features_text else None
        if slide is not None and features is None and _is_h5(slide):
            slide, features = None, slide
        if slide is None and features is None:
            problems.append(f"{where}: empty slide path")
        for given, what in ((slide, "slide"), (features, "feature file")):
            if given is not None and not given.exists():
                problems.append(f"{where}: {what} not found: {given}")
        if features is not None and features.exists() and not _is_h5(features):
            problems.append(f"{where}: feature file is not .h5: {features}")
        patient = cell.get("patient_id", "")
        if not patient:
            problems.append(f"{where}: empty patient_id")
        slide_id = cell.get("slide_id", "") or _default_id(slide_text or features_text)
        mpp = None
        if cell.get("mpp", ""):
            try:
                mpp = float(cell["mpp"])
            except ValueError:
                mpp = float("nan")
            if not (math.isfinite(mpp) and mpp > 0):
                problems.append(f"{where}: mpp must be a positive number")
        slides.append(TrainingSlide(index, slide_id, patient, slide, features, mpp))
    duplicated = sorted(k for k, n in Counter(s.slide_id for s in slides).items() if n > 1)
    problems += [f"duplicate slide_id '{d}'" for d in duplicated]
    if problems:
        shown = "; ".join(problems[:MAX_LISTED]) + (
            f"; (+{len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        )
        raise TableError(
            f"{len(problems)} problem(s): {shown}", path, fix="Fix the manifest; nothing was started."
        )
    return tuple(slides)


def _read_h5(path: Path, num_clusters: int, dim: int, data: bool) -> np.ndarray | None:
    """The ``cluster_features`` dataset (its shape and type checked; read only when ``data``)."""
    import h5py  # only when reference feature files are used

    try:
        with h5py.File(path, "r") as handle:
            if H5_DATASET not in handle or not isinstance(handle[H5_DATASET], h5py.Dataset):
                raise SlideFormatError(
                    f"the feature file has no '{H5_DATASET}' dataset",
                    path,
                    fix="Run the reference kmean_features step, or give the slide instead.",
                )
            dataset = handle[H5_DATASET]
            if dataset.shape != (num_clusters, dim) or dataset.dtype.kind not in "fiu":
                raise SlideFormatError(
                    f"cluster_features is {dataset.shape} {dataset.dtype}, the model takes ({num_clusters}, {dim}) numbers",
                    path,
                    fix="Use features made with the features bundle's encoder and cluster count.",
                )
            return np.asarray(dataset[()], dtype=np.float32) if data else None
    except SequoiaError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise SlideFormatError(
            f"cannot read the feature file ({type(exc).__name__})",
            path,
            fix="Supply an intact HDF5 file, or give the slide instead.",
        ) from None


def check_feature_files(slides: Sequence[TrainingSlide], num_clusters: int, dim: int) -> None:
    """Open every reference feature file and check its dataset's shape (no data read): fail before work."""
    for slide in slides:
        if slide.features is not None:
            _read_h5(slide.features, num_clusters, dim, data=False)


def read_reference_h5(path: Path, num_clusters: int, dim: int) -> tuple[np.ndarray, int]:
    """(num_clusters, dim) float32 cluster features of a reference ``.h5`` and the rows filled."""
    values = _read_h5(path, num_clusters, dim, data=True)
    assert values is not None
    bad = ~np.isfinite(values).all(axis=1)
    if bad.all():
        raise SlideFormatError(
            "every cluster_features row is NaN or infinite", path, fix="Recompute the features."
        )
    if bad.any():
        values[bad] = values[~bad].mean(axis=0)
    return values, int(bad.sum())


def one_fold(bundle: Bundle, settings: Settings):  # noqa: ANN201 - a FoldEnsemble
    """The bundle's first fold only: ``run_prediction`` needs an aggregator, training only the features."""
    from sequoia_clinic.aggregator.ensemble import load_ensemble
    from sequoia_clinic.encoders.model import resolve_device

    first = bundle.folds[0]
    return load_ensemble(
        bundle.aggregator,
        bundle.aggregator_config,
        [(bundle.file(first.weights), first.weights.sha256)],
        resolve_device(settings.device),
    )


def collect_features(
    slides: Sequence[TrainingSlide], bundle: Bundle, settings: Settings, progress: ProgressLike = None
) -> CohortFeatures:
    """Cluster features of every slide (reference .h5 as given; slides through the predict machinery)."""
    num_clusters = int(bundle.aggregator_config.num_clusters)
    dim = int(bundle.aggregator_config.input_dim)
    blocks, sources, filled = [], [], 0
    ensemble = None
    bar = reporter(progress)
    bar.start("cluster features", len(slides))
    for slide in slides:
        if slide.features is not None:
            values, n_filled = read_reference_h5(slide.features, num_clusters, dim)
            blocks.append(values)
            sources.append("reference-h5")
            filled += n_filled
        else:
            assert slide.slide is not None
            if ensemble is None:
                ensemble = one_fold(bundle, settings)
            prediction = run_prediction(
                PredictRequest(slide.slide, bundle.path, slide.mpp), bundle, ensemble, settings
            )
            blocks.append(np.asarray(prediction.clusters.features, dtype=np.float32))
            sources.append("cache" if prediction.cache_hit else "encoded")
        bar.advance(1)
    bar.finish()
    return CohortFeatures(tuple(slides), np.stack(blocks), tuple(sources), filled)
