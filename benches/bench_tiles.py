"""Benchmark of the tile reader: tiles/s and peak memory, side by side with a naive baseline.

1. CMU-1-Small-Region.svs (real Aperio JPEG, 240 px stored tiles): every tile of the 20x grid, read
   (a) by ``iter_tile_batches`` and (b) naively, one tiffslide ``read_region`` per tile at level 0 plus an
   area resize to 256 px when the level-0 size differs. Same tiles, checked identical, several passes.
2. A generated gigapixel slide: a ~60,000 x 40,000 px pyramidal JPEG TIFF at 0.25 um/px (40x) made in a
   temporary folder by repeating the CMU pixels (2x pyramid to 32x; resolution tags give the mpp). The
   whole pipeline runs on it: tissue mask, 20x grid, then all candidate tiles are read from the 2x level.
   Also the Aperio-like case with no 2x level (512 px read at level 0 and area-reduced) and the naive
   reader on the first ``--big-tiles`` / 1000 candidates.

Each measurement runs in its own subprocess, so each peak RSS (``ru_maxrss``, includes the Python
interpreter and libraries) is that method's alone. The ratio fast / naive on the CMU slide is printed last.
Usage: ``python benches/bench_tiles.py [--repeats 20] [--big-width 60000 --big-height 40000]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CMU = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
BIG_MPP = 0.25
BIG_LEVELS = (1, 2, 4, 8, 16, 32)  # a full 2x mipmap (tifffile splits gappy SubIFD pyramids into series)
PATTERN = (2048, 2560)  # CMU crop repeated over the big slide: whole 256 px tiles at every level


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _grid(slide, settings):
    from sequoia_clinic.slides import build_tile_grid, compute_tissue_mask

    mask = compute_tissue_mask(slide, settings.tissue)
    return build_tile_grid(slide, mask, settings.tiles)


def _fast(slide, grid, indices, settings) -> tuple[int, np.ndarray]:
    from sequoia_clinic.slides import iter_tile_batches

    count, checksum = 0, np.zeros(3)
    for batch in iter_tile_batches(slide, grid, indices, settings.tiles):
        count += len(batch.indices)
        checksum += batch.pixels[:, ::64, ::64].reshape(-1, 3).sum(axis=0)
    return count, checksum


def _naive(path: Path, grid, indices) -> tuple[int, np.ndarray]:
    import tiffslide
    from PIL import Image

    size0 = round(grid.tile_size_level0)
    count, checksum = 0, np.zeros(3)
    with tiffslide.TiffSlide(path) as handle:
        for x, y in grid.coords[indices]:
            region = handle.read_region((int(x), int(y)), 0, (size0, size0), as_array=True)
            if size0 != grid.tile_px:
                region = np.asarray(Image.fromarray(region).resize((grid.tile_px,) * 2, Image.Resampling.BOX))
            count += 1
            checksum += region[::64, ::64].reshape(-1, 3).sum(axis=0)
    return count, checksum


def worker(kind: str, path: Path, repeats: int, max_tiles: int) -> dict:
    """One measurement in this (fresh) process."""
    from sequoia_clinic.settings import Settings
    from sequoia_clinic.slides import open_slide

    settings = Settings()
    started = time.perf_counter()
    with open_slide(path) as slide:
        grid = _grid(slide, settings)
        prepare_s = time.perf_counter() - started
        if kind == "cmu-fast" or kind == "cmu-naive":
            indices = np.arange(grid.n_tiles)
        else:
            indices = grid.kept_indices[:max_tiles]
        if kind == "big-resample":  # pretend there is no 2x level: read 512 px at level 0, reduce to 256
            grid = dataclasses.replace(grid, level=0, read_px=2 * grid.read_px, level_downsample=1.0)
        rss_before = _peak_rss_mb()
        started = time.perf_counter()
        total, checksum = 0, np.zeros(3)
        for _ in range(repeats):
            if kind in ("cmu-naive", "big-naive"):
                count, check = _naive(path, grid, indices)
            else:
                count, check = _fast(slide, grid, indices, settings)
            total += count
            checksum += check
        seconds = time.perf_counter() - started
    return {
        "kind": kind,
        "tiles": total,
        "seconds": round(seconds, 3),
        "tiles_per_s": round(total / seconds, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_reading_mb": round(rss_before, 1),
        "prepare_s": round(prepare_s, 2),
        "grid": [int(grid.grid_shape[0]), int(grid.grid_shape[1])],
        "candidates": int(grid.keep.sum()),
        "read": f"{round(grid.tile_size_level0)} px at level 0"
        if kind.endswith("naive")
        else f"{grid.read_px} px at level {grid.level}",
        "checksum": checksum.tolist(),
    }


def generate_big(path: Path, width: int, height: int) -> dict:
    """Write a pyramidal JPEG TIFF repeating a tile-aligned CMU crop; encoded tiles are reused."""
    import imagecodecs
    import tifffile
    import tiffslide
    from PIL import Image

    started = time.perf_counter()
    with tiffslide.TiffSlide(CMU) as handle:
        base = handle.read_region((0, 0), 0, PATTERN, as_array=True)

    def tiles(level_w: int, level_h: int, pattern: np.ndarray):
        cache: dict[tuple[int, int], bytes] = {}
        period_h, period_w = pattern.shape[:2]
        for y in range(0, level_h, 256):
            for x in range(0, level_w, 256):
                key = (x % period_w, y % period_h)
                if key not in cache:
                    rows = (np.arange(y, y + 256) % period_h)[:, None]
                    cols = (np.arange(x, x + 256) % period_w)[None, :]
                    cache[key] = imagecodecs.jpeg8_encode(pattern[rows, cols], level=85)
                yield cache[key]

    px_per_cm = 1e4 / BIG_MPP
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for index, downsample in enumerate(BIG_LEVELS):
            level_w, level_h = -(-width // downsample), -(-height // downsample)
            pattern = np.asarray(Image.fromarray(base).reduce(downsample)) if downsample > 1 else base
            writer.write(
                tiles(level_w, level_h, pattern),
                shape=(level_h, level_w, 3),
                dtype=np.uint8,
                tile=(256, 256),
                compression="jpeg",
                photometric="ycbcr",
                subsampling=(2, 2),
                subifds=len(BIG_LEVELS) - 1 if index == 0 else None,
                subfiletype=1 if index else 0,
                resolution=(px_per_cm / downsample, px_per_cm / downsample),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    return {"seconds": round(time.perf_counter() - started, 1), "bytes": path.stat().st_size}


def _run_worker(kind: str, path: Path, repeats: int, max_tiles: int) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--path", str(path), "--repeats", str(repeats)]
    command += ["--big-tiles", str(max_tiles)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _line(result: dict) -> str:
    return (
        f"  {result['kind']:<13} {result['tiles']:>6} tiles  {result['seconds']:>7.2f} s  "
        f"{result['tiles_per_s']:>7.1f} tiles/s  peak RSS {result['peak_rss_mb']:>6.0f} MB  "
        f"(grid {result['grid'][0]}x{result['grid'][1]}, {result['candidates']} candidates, {result['read']}, "
        f"mask+grid {result['prepare_s']} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="passes over the CMU grid per method")
    parser.add_argument("--big-width", type=int, default=60000)
    parser.add_argument("--big-height", type=int, default=40000)
    parser.add_argument("--big-tiles", type=int, default=4000, help="cap for the slower big-slide runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.path), args.repeats, args.big_tiles)))
        return

    print(f"CMU-1-Small-Region.svs, every 20x grid tile, {args.repeats} passes per method:")
    fast = _run_worker("cmu-fast", CMU, args.repeats, args.big_tiles)
    naive = _run_worker("cmu-naive", CMU, args.repeats, args.big_tiles)
    if not np.allclose(fast["checksum"], naive["checksum"]):
        raise SystemExit("fast and naive readers returned different pixels")
    print(_line(fast))
    print(_line(naive))

    with tempfile.TemporaryDirectory(prefix="sequoia-bench-") as folder:
        big = Path(folder) / "big_40x.tif"
        made = generate_big(big, args.big_width, args.big_height)
        print(
            f"Generated {args.big_width} x {args.big_height} px JPEG TIFF at {BIG_MPP} um/px, levels "
            f"{BIG_LEVELS}: {made['bytes'] / 1e9:.2f} GB in {made['seconds']} s. One pass over all candidate "
            f"tiles (fast), the first {args.big_tiles} (resample) and the first {min(args.big_tiles, 1000)} "
            "(naive, 512 px read at level 0 and resized):"
        )
        print(_line(_run_worker("big-fast", big, 1, 10**9)))
        print(_line(_run_worker("big-resample", big, 1, args.big_tiles)))
        print(_line(_run_worker("big-naive", big, 1, min(args.big_tiles, 1000))))

    ratio = fast["tiles_per_s"] / naive["tiles_per_s"]
    print(f"ratio fast/naive tiles per second on CMU-1-Small-Region.svs: {ratio:.2f}x")


if __name__ == "__main__":
    main()
