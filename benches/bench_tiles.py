"""Tile selection vs the SEQUOIA reference's tiling algorithm and vs the raw JPEG decode rate, side by side.

Slides: synthetic pyramidal SVS files (Aperio layout and description: AppMag 20, MPP 0.5; 256 px JPEG tiles;
levels 1, 4, 16, 32), 10,000 x 10,000 and 40,000 x 30,000 px by default, written to a temporary folder by
repeating mirrored copies of a crop of the packaged demo slide's real pixels. On each slide, each
measurement in its own process (so each peak RSS is its own):

* decode    -- the bound: the slide's stored level-0 JPEG tiles (up to ``--decode-tiles``, evenly spread),
               read into memory first, then decoded one after another in one thread with imagecodecs;
* ours      -- open, tissue mask, 20x grid, then :class:`~sequoia_clinic.slides.TileSelection`: candidates
               checked in the tile order's check order (the vectorised pixel check beside the decode threads)
               until ``--cap`` passed; in the ``reference`` tile order and in the default ``grid`` order;
* reference -- the SEQUOIA tiling algorithm (``patch_gen_hdf5.py``) re-implemented here from the project's
               reference notes (``../shared/reference/sequoia.md``), not copied: a mask of the lowest level
               (HSV saturation above its Otsu threshold, not bright in all three channels by their own Otsu
               thresholds, R, G and B above 50; dilated x3 then eroded x3); the level-0 positions
               ``range(0, size, 256 * AppMag / 20)`` column by column, shuffled by numpy seed 5; a position
               whose mask pixel at its corner is tissue is read (``read_region``), re-masked with the same
               recipe (per-tile Otsu) and dilated x3, and kept when more than 20 % of it is tissue and
               skimage's ``is_low_contrast`` is false; it stops at ``--cap`` kept tiles. tiffslide stands in
               for OpenSlide and the HDF5 writes are left out (both only favour the reference).

Printed per slide: seconds, candidates checked, candidates/s and peak RSS per method, then the ratios: per
candidate (selection loop only), for the whole slide (open to ``--cap`` tiles, or every candidate), and our
candidates/s as a share of the single-thread raw decode rate. Last, the tile reader alone on the demo slide
vs one ``read_region`` per tile (the former content of this bench).

    .venv/bin/python benches/bench_tiles.py [--sizes 10000x10000,40000x30000] [--cap 4000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO_SLIDE = REPO / "sequoia_clinic" / "demo" / "CMU-1-Small-Region.svs"
LEVELS = (1, 4, 16, 32)  # Aperio-like pyramid
PATTERN = (2048, 2560)  # (width, height) of the demo-slide crop that is mirrored and repeated
TILE = 256
MPP = 0.5


def _peak_rss_mb() -> float:
    """This process's own peak RSS: ``VmHWM`` of /proc/self/status (the high-water mark of the current
    address space). ``ru_maxrss`` would not do in a worker: Linux carries the peak of the memory before
    ``exec`` into it, which with vfork is this bench's own peak (every worker then read 251 MB)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- the synthetic SVS -------------------------------------------------------------------------------------
def write_svs(path: Path, width: int, height: int) -> dict:
    """An Aperio-style pyramidal JPEG TIFF: baseline, thumbnail, then the reduced levels as plain pages."""
    import imagecodecs
    import tifffile
    import tiffslide
    from PIL import Image

    started = time.perf_counter()
    with tiffslide.TiffSlide(DEMO_SLIDE) as handle:
        crop = handle.read_region((0, 0), 0, PATTERN, as_array=True)
    strip = np.concatenate([crop, crop[:, ::-1]], axis=1)
    base = np.concatenate([strip, strip[::-1]], axis=0)  # mirrored: no seams

    def tiles(level_w: int, level_h: int, pattern: np.ndarray):
        cache: dict[tuple[int, int], bytes] = {}
        period_h, period_w = pattern.shape[:2]
        for y in range(0, level_h, TILE):
            for x in range(0, level_w, TILE):
                key = (x % period_w, y % period_h)
                if key not in cache:
                    rows = (np.arange(y, y + TILE) % period_h)[:, None]
                    cols = (np.arange(x, x + TILE) % period_w)[None, :]
                    cache[key] = imagecodecs.jpeg8_encode(pattern[rows, cols], level=85)
                yield cache[key]

    def description(level_w: int, level_h: int) -> str:
        return (
            f"Aperio Image Library v12.0.0\r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) "
            f"-> {level_w}x{level_h} JPEG/RGB Q=85|AppMag = 20|MPP = {MPP}"
        )

    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for index, downsample in enumerate(LEVELS):
            level_w, level_h = -(-width // downsample), -(-height // downsample)
            pattern = np.asarray(Image.fromarray(base).reduce(downsample)) if downsample > 1 else base
            writer.write(
                tiles(level_w, level_h, pattern),
                shape=(level_h, level_w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="jpeg",
                photometric="ycbcr",
                subsampling=(2, 2),
                description=description(level_w, level_h),
                metadata=None,
            )
            if index == 0:  # the thumbnail page of an SVS
                thumb = np.asarray(Image.fromarray(base).reduce(8))
                writer.write(thumb, photometric="rgb", compression="jpeg", metadata=None, description="thumb")
    return {"seconds": round(time.perf_counter() - started, 1), "bytes": path.stat().st_size}


# ---- the reference's tiling algorithm (re-implemented from its description) --------------------------------
def _reference_mask(rgb: np.ndarray) -> np.ndarray:
    """Tissue: saturation above its Otsu threshold, not bright in all channels, every channel above 50."""
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    saturation = rgb2hsv(rgb)[..., 1]
    bright = np.ones(rgb.shape[:2], dtype=bool)
    for channel in range(3):
        bright &= rgb[..., channel] > threshold_otsu(rgb[..., channel])
    return (saturation > threshold_otsu(saturation)) & ~bright & (rgb > 50).all(axis=2)


def reference_tiling(path: Path, cap: int) -> dict:
    import tiffslide
    from scipy import ndimage
    from skimage.exposure import is_low_contrast

    started = time.perf_counter()
    slide = tiffslide.TiffSlide(path)
    lowest = slide.level_count - 1
    picture = np.asarray(slide.read_region((0, 0), lowest, slide.level_dimensions[lowest]).convert("RGB"))
    mask = ndimage.binary_dilation(_reference_mask(picture), iterations=3)
    mask = ndimage.binary_erosion(mask, iterations=3)
    width, height = slide.dimensions
    ratio_x, ratio_y = width / mask.shape[1], height / mask.shape[0]
    step = int(TILE * float(slide.properties.get("aperio.AppMag") or 20) / 20)
    positions = [(x, y) for x in range(0, width, step) for y in range(0, height, step)]
    np.random.seed(5)
    np.random.shuffle(positions)
    loop_started, loop_cpu = time.perf_counter(), time.process_time()
    kept = checked = 0
    for x, y in positions:
        if mask[int(y / ratio_y), int(x / ratio_x)]:
            patch = slide.read_region((x, y), 0, (step, step)).convert("RGB")
            checked += 1
            try:
                tile_mask = ndimage.binary_dilation(_reference_mask(np.asarray(patch)), iterations=3)
            except ValueError:  # Otsu of a constant channel: no tissue
                continue
            if tile_mask.sum() > 0.2 * tile_mask.size and not is_low_contrast(patch):
                if step != TILE:
                    patch = patch.resize((TILE, TILE))
                kept += 1
        if kept >= cap:
            break
    done, cpu = time.perf_counter(), time.process_time() - loop_cpu
    slide.close()
    return {
        "loop_s": done - loop_started,
        "cpu_s": cpu,
        "whole_s": done - started,
        "checked": checked,
        "kept": kept,
    }


# ---- ours and the decode bound -----------------------------------------------------------------------------
def ours_tiling(path: Path, order_name: str, cap: int) -> dict:
    from sequoia_clinic.features.sampling import check_order, reference_lattice_shape
    from sequoia_clinic.settings import Settings, TileOrder
    from sequoia_clinic.slides.opening import open_slide
    from sequoia_clinic.slides.tiling import TileSelection, build_tile_grid
    from sequoia_clinic.slides.tissue import compute_tissue_mask

    settings = Settings()
    started = time.perf_counter()
    with open_slide(path) as slide:
        grid = build_tile_grid(slide, compute_tissue_mask(slide, settings.tissue), settings.tiles)
        shape = reference_lattice_shape(grid.level_size, grid.read_px)
        order = check_order(TileOrder(order_name), grid.kept_indices, grid.grid_shape, shape, 99)
        loop_started, loop_cpu = time.perf_counter(), time.process_time()
        selection = TileSelection(slide, grid, order, cap, settings.tiles)
        for _ in selection.chunks():
            pass
        result = selection.result()
        done, cpu = time.perf_counter(), time.process_time() - loop_cpu
    assert result.checked is not None
    return {
        "loop_s": done - loop_started,
        "cpu_s": cpu,
        "whole_s": done - started,
        "checked": int(result.checked.sum()),
        "kept": int((result.keep & result.checked).sum()),
        "candidates": int(grid.keep.sum()),
        "stored_decodes": selection.native_decodes,
    }


def raw_decode(path: Path, limit: int, candidates_only: bool) -> dict:
    """Single-thread imagecodecs decoding of level-0 stored tiles whose bytes were read beforehand.

    ``candidates_only``: the stored tiles under our tile candidates (the tiles selection decodes), the
    first ``limit`` in the reference check order; else ``limit`` stored tiles spread evenly over the level
    (background included, which decodes faster).
    """
    import imagecodecs
    import tifffile

    from sequoia_clinic.features.sampling import check_order, reference_lattice_shape
    from sequoia_clinic.settings import Settings, TileOrder
    from sequoia_clinic.slides.opening import open_slide
    from sequoia_clinic.slides.tiling import build_tile_grid
    from sequoia_clinic.slides.tissue import compute_tissue_mask

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        columns = -(-int(page.imagewidth) // int(page.tilewidth))
        if candidates_only:
            settings = Settings()
            with open_slide(path) as slide:
                grid = build_tile_grid(slide, compute_tissue_mask(slide, settings.tissue), settings.tiles)
            shape = reference_lattice_shape(grid.level_size, grid.read_px)
            order = check_order(TileOrder.REFERENCE, grid.kept_indices, grid.grid_shape, shape, 99)[:limit]
            tile_w, tile_h = int(page.tilewidth), int(page.tilelength)
            picks = sorted(
                {
                    (y // tile_h) * columns + x // tile_w
                    for x0, y0 in grid.level_coords()[order]
                    for x in range(int(x0), int(x0) + grid.read_px, tile_w)
                    for y in range(int(y0), int(y0) + grid.read_px, tile_h)
                }
            )
        else:
            count = len(page.dataoffsets)
            picks = np.unique(np.linspace(0, count - 1, min(limit, count)).astype(int)).tolist()
        with open(path, "rb") as handle:
            blobs = []
            for index in picks:
                handle.seek(int(page.dataoffsets[index]))
                blobs.append(handle.read(int(page.databytecounts[index])))
    started, cpu = time.perf_counter(), time.process_time()
    for blob in blobs:
        imagecodecs.jpeg8_decode(blob)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"loop_s": seconds, "cpu_s": cpu, "whole_s": seconds, "checked": len(blobs), "kept": 0}


# ---- the tile reader alone on the demo slide (reader vs one read_region per tile) --------------------------
def reader_pass(kind: str, repeats: int) -> dict:
    import tiffslide

    from sequoia_clinic.settings import Settings
    from sequoia_clinic.slides.opening import open_slide
    from sequoia_clinic.slides.tile_reader import iter_tile_batches
    from sequoia_clinic.slides.tiling import build_tile_grid
    from sequoia_clinic.slides.tissue import compute_tissue_mask

    settings = Settings()
    with open_slide(DEMO_SLIDE) as slide:
        grid = build_tile_grid(slide, compute_tissue_mask(slide, settings.tissue), settings.tiles)
        indices = np.arange(grid.n_tiles)
        started, cpu = time.perf_counter(), time.process_time()
        checksum = 0
        for _ in range(repeats):
            if kind == "reader":
                for batch in iter_tile_batches(slide, grid, indices, settings.tiles):
                    checksum += int(batch.pixels[:, ::64, ::64].sum())
            else:
                with tiffslide.TiffSlide(DEMO_SLIDE) as handle:
                    for x, y in grid.coords:
                        region = handle.read_region((int(x), int(y)), 0, (TILE, TILE), as_array=True)
                        checksum += int(region[::64, ::64].sum())
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "loop_s": seconds,
        "cpu_s": cpu,
        "whole_s": seconds,
        "checked": repeats * grid.n_tiles,
        "kept": checksum,
    }


def worker(kind: str, path: Path, cap: int, limit: int) -> dict:
    if kind.startswith("decode-"):
        out = raw_decode(path, limit, kind == "decode-candidates")
    elif kind == "reference":
        out = reference_tiling(path, cap)
    elif kind.startswith("ours-"):
        out = ours_tiling(path, kind.removeprefix("ours-"), cap)
    else:
        out = reader_pass(kind, limit)
    return {**out, "kind": kind, "peak_rss_mb": round(_peak_rss_mb(), 1)}


def _run(kind: str, path: Path, cap: int, limit: int) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--path", str(path), "--cap", str(cap)]
    command += ["--decode-tiles", str(limit)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _median(runs: list[dict]) -> dict:
    """The run with the median loop time (its own counts and RSS), plus the spread of loop and whole times."""
    ordered = sorted(runs, key=lambda r: r["loop_s"])
    middle = dict(ordered[len(ordered) // 2])
    middle["loop_range"] = (ordered[0]["loop_s"], ordered[-1]["loop_s"])
    middle["whole_s"] = statistics.median(r["whole_s"] for r in runs)
    return middle


def _line(label: str, r: dict) -> str:
    rate = r["checked"] / r["loop_s"]
    return (
        f"  {label:<16} {r['whole_s']:>8.2f} s whole  {r['loop_s']:>8.2f} s loop  {r['checked']:>6} checked "
        f"{r['kept']:>6} kept  {rate:>7.0f} /s  {1e3 * r['loop_s'] / r['checked']:>6.3f} ms each "
        f"({1e3 * r['cpu_s'] / r['checked']:.3f} ms CPU)  peak RSS {r['peak_rss_mb']:>5.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000x10000,40000x30000", help="slide sizes, WIDTHxHEIGHT,...")
    parser.add_argument("--cap", type=int, default=4000, help="tiles kept per slide (SEQUOIA: 4000)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are reported")
    parser.add_argument("--decode-tiles", type=int, default=6000, help="stored tiles in the decode bound")
    parser.add_argument("--reader-repeats", type=int, default=20, help="passes over the demo slide")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.path), args.cap, args.decode_tiles)))
        return

    kinds = ("decode-all", "decode-candidates", "ours-reference", "ours-grid", "reference")
    summary = []
    with tempfile.TemporaryDirectory(prefix="sequoia-bench-") as folder:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            path = Path(folder) / f"synthetic-{width}x{height}.svs"
            made = write_svs(path, width, height)
            print(
                f"{width} x {height} px synthetic SVS (demo-slide pixels, {TILE} px JPEG tiles, levels {LEVELS}): "
                f"{made['bytes'] / 1e6:.0f} MB in {made['seconds']} s; cap {args.cap} tiles, {args.rounds} round(s)"
            )
            runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            for _ in range(args.rounds):
                for kind in kinds:
                    runs[kind].append(_run(kind, path, args.cap, args.decode_tiles))
            result = {kind: _median(r) for kind, r in runs.items()}
            labels = {
                "decode-all": "decode, any tile",
                "decode-candidates": "decode, candidates",
                "ours-reference": "ours (reference)",
                "ours-grid": "ours (grid)",
                "reference": "reference",
            }
            for kind in kinds:
                print(_line(labels[kind], result[kind]))
            ref, decode = result["reference"], result["decode-candidates"]
            ours = ("ours-reference", "ours-grid")
            per_tile = {
                k: ref["loop_s"] / ref["checked"] / (result[k]["loop_s"] / result[k]["checked"]) for k in ours
            }
            whole = {k: ref["whole_s"] / result[k]["whole_s"] for k in ours}
            decode_rate = decode["checked"] / decode["loop_s"]
            bound = {k: result[k]["checked"] / result[k]["loop_s"] / decode_rate for k in ours}
            summary.append((size, per_tile, whole, bound))

    print(f"Tile reader on the demo slide, every 20x grid tile, {args.reader_repeats} passes:")
    reader = _run("reader", DEMO_SLIDE, args.cap, args.reader_repeats)
    naive = _run("naive", DEMO_SLIDE, args.cap, args.reader_repeats)
    if reader["kept"] != naive["kept"]:
        raise SystemExit("the reader and read_region returned different pixels")
    print(_line("reader", reader))
    print(_line("read_region", naive))

    print(
        "Ratios (targets: >= 20x per candidate and for the whole slide; >= 50 % of the single-thread raw decode "
        "rate of the same candidate tiles):"
    )
    for size, per_tile, whole, bound in summary:
        for kind in ("ours-reference", "ours-grid"):
            print(
                f"  {size:<12} {kind:<15} per candidate {per_tile[kind]:5.1f}x   whole slide {whole[kind]:5.1f}x   "
                f"{100 * bound[kind]:4.0f} % of the raw decode rate"
            )
    rate = lambda r: r["checked"] / r["loop_s"]  # noqa: E731
    print(f"  reader / read_region on the demo slide: {rate(reader) / rate(naive):.2f}x")


if __name__ == "__main__":
    main()
