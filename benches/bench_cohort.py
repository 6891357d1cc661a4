"""Cohort scoring: the engine and per-slide isolation vs calling the pipeline directly, and 1 vs 2 workers.

Same slides, same settings, one run, side by side:

* direct    — ``score_slide(ScoreRequest(slide, formats=json))`` for each slide, one after another, in this
              process (what a user's own loop would do);
* cohort/1  — ``run_cohort`` with ``--workers 1``: in this process, each slide in its own forked child of
              the warm helper, hashed, scored, committed create-exclusively, with ledger lines;
* cohort/2  — ``run_cohort`` with ``--workers 2``: a Dask LocalCluster of 2 single-threaded workers, each
              with its own helper (torch threads per slide = cores / 2).

The slides are copies of one mosaic of the demo slide's real pixels (``--mosaic`` x ``--mosaic`` mirrored
copies, a two-level JPEG TIFF at 0.5 um/px), each with distinct trailing bytes so that every copy has its own content
hash and is computed (the feature cache is off everywhere). With the default 6 x 6 mosaic a slide keeps
1,620 tiles and takes over 5 s on a 2-core CPU, so the per-slide overhead is measured where it matters.

Reported: seconds per slide (direct: wall time per call; cohort: the run's steady state, first attempt
start to last attempt end over the slides, plus the mean attempt time, fork to exit), the overhead vs
direct, the one-time start-up (cluster, helper imports and warm-up, plan, tables and summary), slides per
minute with 1 and N workers (scaling efficiency = rate_N / (N x rate_1)) and the peak RSS of each worker's
slide processes (from the ledger). About 2.5 minutes on the 2-core development machine.

    .venv/bin/python benches/bench_cohort.py [--slides 6] [--mosaic 6] [--workers 2]
"""

from __future__ import annotations

import os

# Like for like: the cohort's slide helper starts with OMP_WAIT_POLICY=PASSIVE unless the environment sets
# it (pipeline/cohort_isolation.py), so the direct loop in this process gets the same policy. It must be set
# before torch (libgomp) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from sequoia_clinic.locations import default_cache_dir, weights_cache_dir
from sequoia_clinic.pipeline.cohort import CohortRequest, run_cohort
from sequoia_clinic.pipeline.cohort_engines import EngineSpec
from sequoia_clinic.pipeline.cohort_store import CohortStore
from sequoia_clinic.pipeline.score import ScoreRequest, score_slide
from sequoia_clinic.report.files import OutputFormat
from sequoia_clinic.settings import ModelSettings, Settings
from sequoia_clinic.slides.opening import open_slide

REPO = Path(__file__).resolve().parents[1]
DEMO_SLIDE = REPO / "sequoia_clinic" / "demo" / "CMU-1-Small-Region.svs"
MOSAIC_MPP = 0.5
STORED_TILE = 240


def write_mosaic(path: Path, copies: int) -> Path:
    """A two-level JPEG TIFF of ``copies`` x ``copies`` mirrored copies of the demo slide's pixels.

    Level 0 at 0.5 um/px in 240 px stored tiles, and a 4x reduction (slides must have an overview level).
    """
    import imagecodecs
    import tifffile
    from PIL import Image

    with open_slide(DEMO_SLIDE) as slide:
        base = slide.read_level_region(0, (0, 0), slide.info.dimensions)
    strip = np.concatenate([base[:, ::-1] if j % 2 else base for j in range(copies)], axis=1)
    image = np.concatenate([strip[::-1] if i % 2 else strip for i in range(copies)], axis=0)
    reduced = np.asarray(Image.fromarray(image).reduce(4))

    def tiles(level: np.ndarray):
        height, width = level.shape[:2]
        for y in range(0, height, STORED_TILE):
            for x in range(0, width, STORED_TILE):
                tile = np.zeros((STORED_TILE, STORED_TILE, 3), np.uint8)
                crop = level[y : y + STORED_TILE, x : x + STORED_TILE]
                tile[: crop.shape[0], : crop.shape[1]] = crop
                yield imagecodecs.jpeg8_encode(tile, level=85)

    with tifffile.TiffWriter(path) as writer:
        for index, level in enumerate((image, reduced)):
            px_per_cm = 1e4 / (MOSAIC_MPP * image.shape[1] / level.shape[1])
            writer.write(
                tiles(level),
                shape=level.shape,
                dtype=np.uint8,
                tile=(STORED_TILE, STORED_TILE),
                compression="jpeg",
                photometric="ycbcr",
                subsampling=(2, 2),
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subifds=1 if index == 0 else None,
                subfiletype=1 if index else 0,
                metadata=None,
            )
    return path


def make_slides(folder: Path, count: int, copies: int) -> list[Path]:
    """``count`` copies of one mosaic, each with distinct trailing bytes (own content hash, same pixels)."""
    master = write_mosaic(folder / "mosaic.tif", copies)
    slides = []
    for i in range(count):
        target = folder / f"slide{i:02d}.tif"
        shutil.copyfile(master, target)
        with open(target, "ab") as handle:
            handle.write(f"copy {i}".encode())
        slides.append(target)
    master.unlink()
    return slides


def settings() -> Settings:
    return Settings(
        models=ModelSettings(weights_cache_dir=weights_cache_dir(default_cache_dir())), cache_dir=None
    )


def direct(slides: list[Path], folder: Path) -> list[float]:
    seconds = []
    for i, slide in enumerate(slides):
        start = time.perf_counter()
        score_slide(ScoreRequest(slide, folder / f"direct{i}", formats=(OutputFormat.JSON,)), settings())
        seconds.append(time.perf_counter() - start)
    return seconds


def cohort(slides: list[Path], folder: Path, workers: int) -> dict[str, float]:
    manifest = folder / f"manifest-{workers}.csv"
    manifest.write_text("slide,patient_id\n" + "".join(f"{s},P{i}\n" for i, s in enumerate(slides)))
    out = folder / f"cohort-{workers}"
    start = time.perf_counter()
    outcome = run_cohort(CohortRequest(manifest, out, engine=EngineSpec(workers=workers)), settings())
    wall = time.perf_counter() - start
    assert outcome.computed == len(slides), outcome.summary.counts
    entries = CohortStore(out).read_ledger()
    starts = [e.time for e in entries if e.event == "start"]
    ends = [e for e in entries if e.event == "end"]
    rss: dict[int, float] = defaultdict(float)
    for e in ends:
        rss[e.pid] = max(rss[e.pid], e.peak_rss_mb or 0.0)
    span = max(e.time for e in ends) - min(starts)
    return {
        "wall": wall,
        "attempt": statistics.mean(e.seconds or 0.0 for e in ends),
        "steady_per_slide": span / len(slides),
        "startup": wall - span,
        "slides_per_min": 60.0 * len(slides) / span,
        "peak_rss_mb": max(rss.values()),
        "writers": len(rss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slides", type=int, default=6)
    parser.add_argument("--mosaic", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-cohort-"))
    try:
        t0 = time.perf_counter()
        slides = make_slides(folder, args.slides, args.mosaic)
        print(
            f"{len(slides)} slides of a {args.mosaic}x{args.mosaic} mosaic written in {time.perf_counter() - t0:.1f} s"
        )
        score_slide(
            ScoreRequest(DEMO_SLIDE, folder / "warm", formats=(OutputFormat.JSON,)), settings()
        )  # warm-up
        ref = direct(slides, folder)
        one = cohort(slides, folder, 1)
        many = cohort(slides, folder, args.workers)
        mean = statistics.mean(ref)
        print()
        print("| mode | s per slide | vs direct | slides/min | one-time start-up | peak RSS per worker |")
        print("|---|---|---|---|---|---|")
        print(f"| direct `score_slide` loop, one process | {mean:.2f} | - | {60 / mean:.1f} | - | - |")
        print(
            f"| cohort, 1 worker (in-process, a child per slide) | {one['steady_per_slide']:.2f} | "
            f"{(one['steady_per_slide'] / mean - 1) * 100:+.1f} % | {one['slides_per_min']:.1f} | "
            f"{one['startup']:.1f} s | {one['peak_rss_mb'] / 1024:.2f} GB |"
        )
        print(
            f"| cohort, {args.workers} workers (LocalCluster) | {many['steady_per_slide']:.2f} "
            f"({args.workers} at a time, {many['attempt']:.1f} s each) | "
            f"{(many['steady_per_slide'] / mean - 1) * 100:+.1f} % | {many['slides_per_min']:.1f} | "
            f"{many['startup']:.1f} s | {many['peak_rss_mb'] / 1024:.2f} GB |"
        )
        efficiency = many["slides_per_min"] / (args.workers * one["slides_per_min"])
        print()
        print(
            f"direct per slide: {', '.join(f'{s:.2f}' for s in ref)} s; cohort attempt (fork to exit): {one['attempt']:.2f} s"
        )
        print(
            f"scaling 1 -> {args.workers} workers: {one['slides_per_min']:.1f} -> {many['slides_per_min']:.1f} "
            f"slides/min, efficiency {efficiency:.2f}"
        )
        print(
            f"overhead of engine + isolation (steady state, 1 worker): "
            f"{(one['steady_per_slide'] / mean - 1) * 100:+.1f} % (target <= 10 % on slides of >= 5 s; "
            f"direct mean {mean:.2f} s)"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
