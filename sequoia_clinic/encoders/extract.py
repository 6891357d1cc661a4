"""Streaming, batched feature extraction: a loader thread decodes tiles while the encoder computes.

With ``overlap=False`` (the CPU encoder, see ``encoders.model.reads_ahead``) batches are read and encoded
in turn in the caller's thread instead.

The tile reader (``sequoia_clinic.slides.iter_tile_batches``) is a generator of decoded uint8 batches. It
is driven by one background thread (``TileEncoder.prepare``: checks, pinning for CUDA) that fills a small
bounded queue, so JPEG/JPEG 2000 decoding (imagecodecs, which releases the GIL) overlaps with resizing,
normalising and the encoder's matrix work on the main thread. Results are written into a
preallocated (n, D) float32 array in the order of the requested tile indices, whatever order batches
arrive in. A failure in either thread stops both and is re-raised in the caller; the loader checks a stop
event between batches and is always joined before returning, so the slide is never closed under it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch

from sequoia_clinic.encoders.model import TileEncoder
from sequoia_clinic.errors import WeightsError
from sequoia_clinic.progress import ProgressLike, reporter


class TileBatchLike(Protocol):
    """Read-only, so that frozen dataclasses (``slides.TileBatch``) match."""

    @property
    def indices(self) -> np.ndarray: ...  # (n,) positions in the tile grid

    @property
    def pixels(self) -> np.ndarray: ...  # (n, H, W, 3) uint8


@dataclass(frozen=True)
class ExtractionStats:
    """Tiles encoded, total wall time and tiles per second."""

    n_tiles: int
    seconds: float
    tiles_per_second: float


_DONE = object()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless asked to stop; never blocks forever on a full queue."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


@dataclass(frozen=True)
class _Prepared:
    indices: np.ndarray
    tensor: torch.Tensor


def _produce(
    batches: Iterable[TileBatchLike], encoder: TileEncoder, q: queue.Queue, stop: threading.Event
) -> None:
    iterator = iter(batches)
    try:
        while not stop.is_set():  # checked between batches: after a failure at most one more batch is read
            batch = next(iterator, _DONE)
            if batch is _DONE or stop.is_set():
                break
            tiles = cast(TileBatchLike, batch)  # not _DONE (checked above)
            if not _put(q, _Prepared(np.asarray(tiles.indices), encoder.prepare(tiles.pixels)), stop):
                break
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _put(q, _Failure(exc), stop)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        _put(q, _DONE, stop)


def extract_features(
    encoder: TileEncoder,
    batches: Iterable[TileBatchLike],
    indices: np.ndarray,
    queue_size: int = 4,
    progress: ProgressLike = None,
    stage: str = "encoding tiles",
    overlap: bool = True,
) -> tuple[np.ndarray, ExtractionStats]:
    """Embed every tile of ``indices`` (as delivered by ``batches``) → (len(indices), D) float32.

    ``overlap``: read the next batch in a loader thread while this one is encoded (False: in turn).
    """
    indices = np.asarray(indices, dtype=np.int64)
    row_of = {int(i): r for r, i in enumerate(indices)}
    features = np.zeros((len(indices), encoder.out_dim), dtype=np.float32)
    filled = np.zeros(len(indices), dtype=bool)
    report = reporter(progress)
    report.start(stage, len(indices))

    def encode(item: _Prepared) -> None:
        out = encoder.forward(item.tensor).numpy()
        if not np.isfinite(out).all():
            raise WeightsError(
                f"the '{encoder.spec.name}' encoder produced non-finite features",
                fix="Check the encoder weights file (is it the one made for this encoder?).",
            )
        rows = np.fromiter((row_of[int(i)] for i in item.indices), dtype=np.int64, count=len(item.indices))
        features[rows] = out
        filled[rows] = True
        report.advance(len(rows))

    start = time.perf_counter()
    if overlap:
        _encode_overlapped(batches, encoder, encode, queue_size)
    else:
        for batch in batches:
            encode(_Prepared(np.asarray(batch.indices), encoder.prepare(batch.pixels)))
    report.finish()
    if not filled.all():
        missing = int((~filled).sum())
        raise RuntimeError(f"the tile reader delivered {len(indices) - missing} of {len(indices)} tiles")
    seconds = time.perf_counter() - start
    stats = ExtractionStats(
        n_tiles=len(indices),
        seconds=seconds,
        tiles_per_second=len(indices) / seconds if seconds > 0 else float("inf"),
    )
    return features, stats


def _encode_overlapped(
    batches: Iterable[TileBatchLike],
    encoder: TileEncoder,
    encode: Callable[[_Prepared], None],
    queue_size: int,
) -> None:
    """``encode`` each batch in this thread while a loader thread reads and prepares the next ones."""
    q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
    stop = threading.Event()
    loader = threading.Thread(
        target=_produce, args=(batches, encoder, q, stop), name="tile-loader", daemon=True
    )
    loader.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                raise item.error
            encode(item)
    finally:
        stop.set()
        loader.join()  # the loader stops after its current batch; the caller may then close the slide


@dataclass(frozen=True)
class ArrayBatch:
    """A tile batch built from arrays (tests, benchmarks, cached pixels)."""

    indices: np.ndarray
    pixels: np.ndarray


def array_batches(pixels: np.ndarray, batch_size: int) -> Iterable[ArrayBatch]:
    """Yield ``pixels`` (n, H, W, 3) in batches, indices 0..n-1."""
    for lo in range(0, len(pixels), batch_size):
        hi = min(lo + batch_size, len(pixels))
        yield ArrayBatch(indices=np.arange(lo, hi), pixels=pixels[lo:hi])
