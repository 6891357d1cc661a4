"""Tile-encoder throughput: the streaming batched pipeline vs the reference's one-tile loop, side by side.

Same slide, same tiles, same network, same machine, one run. The default slide is a mosaic of the demo
slide's real pixels (``--mosaic`` x ``--mosaic`` mirrored copies, written once to a temporary JPEG TIFF
with 240 px stored tiles at 0.5 um/px, as Aperio scanners store them), so that the timing covers ~900
tiles rather than the demo slide's 88 (whose runs last a tenth of a second and are mostly start-up):

* reference — the reference's own feature loop as it is: tiles already cut and in memory (sequoia-pub reads
            them from its HDF5 file, so no slide decoding is timed for it), one tile per forward pass, PIL
            ``Resize(224) → ToTensor → Normalize``, float32, ``no_grad``, ``.cpu().numpy()`` per tile;
* read_region — the same one-tile loop, each tile read from the slide with ``read_region`` (what the
            reference's spatial script does; the README's earlier "naive" figure);
* pipeline — ``sequoia_clinic`` from the slide: the batched tile reader (each stored tile decoded once; in a
            background thread on a GPU, taking turns with the encoder on the CPU), uint8 → device, batched
            resizing (the normalisation folded into a ViT's patch embedding), ``inference_mode``,
            channels-last, batches of ``--batch-size``; run in float32 and in bfloat16 autocast (when the
            device has native bf16). The default ``--precision auto`` of ``predict``/``score`` is bf16 there.

The headline ratio is pipeline / reference loop, fp32 and default precision separately (targets >= 1.2x and
>= 2x). The pipeline decodes its tiles and the reference loop does not, so the comparison favours the
reference.

It also reports the compute-only speed-up (both on preloaded pixels), the achieved GFLOP/s of the encoder
(FLOPs counted by ``torch.utils.flop_counter``) against a plain matmul of the same dtype on this machine,
and how far bf16 features are from fp32 ones. Encoders: ``uni``-shaped ViT-L/16 (random weights) on the first
``--uni-tiles`` tiles (0 skips it), ResNet-50 on the first ``--resnet-tiles``, then the demo bundle's
``demo-vit`` on every tile of the grid. The headline ratios are printed last.

    .venv/bin/python benches/bench_encoder.py [--slide PATH | --mosaic 3] [--batch-size 32] [--uni-tiles 32]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from sequoia_clinic.encoders.extract import extract_features
from sequoia_clinic.encoders.model import (
    TileEncoder,
    computes_in_bf16,
    has_native_bf16,
    random_encoder,
    reads_ahead,
)
from sequoia_clinic.encoders.registry import ENCODERS
from sequoia_clinic.settings import Settings
from sequoia_clinic.slides.opening import open_slide
from sequoia_clinic.slides.tile_reader import iter_tile_batches
from sequoia_clinic.slides.tiling import build_tile_grid
from sequoia_clinic.slides.tissue import compute_tissue_mask

REPO = Path(__file__).resolve().parents[1]
DEMO_SLIDE = REPO / "sequoia_clinic" / "demo" / "CMU-1-Small-Region.svs"
MOSAIC_MPP = 0.5
TARGETED = ("demo-vit", "resnet50")  # encoders with speed targets (default >= 2x, fp32 >= 1.2x)
STORED_TILE = 240  # Aperio's stored tile size: 256 px tiles straddle stored tiles, as on real slides


def write_mosaic(path: Path, copies: int) -> Path:
    """A single-level JPEG TIFF of ``copies`` x ``copies`` mirrored copies of the demo slide's pixels."""
    import imagecodecs
    import tifffile

    with open_slide(DEMO_SLIDE) as slide:
        base = slide.read_level_region(0, (0, 0), slide.info.dimensions)
    strip = np.concatenate([base[:, ::-1] if j % 2 else base for j in range(copies)], axis=1)
    image = np.concatenate([strip[::-1] if i % 2 else strip for i in range(copies)], axis=0)
    height, width = image.shape[:2]

    def tiles():
        for y in range(0, height, STORED_TILE):
            for x in range(0, width, STORED_TILE):
                tile = np.zeros((STORED_TILE, STORED_TILE, 3), np.uint8)
                crop = image[y : y + STORED_TILE, x : x + STORED_TILE]
                tile[: crop.shape[0], : crop.shape[1]] = crop
                yield imagecodecs.jpeg8_encode(tile, level=85)

    px_per_cm = 1e4 / MOSAIC_MPP
    with tifffile.TiffWriter(path) as writer:
        writer.write(
            tiles(),
            shape=(height, width, 3),
            dtype=np.uint8,
            tile=(STORED_TILE, STORED_TILE),
            compression="jpeg",
            photometric="ycbcr",
            subsampling=(2, 2),
            resolution=(px_per_cm, px_per_cm),
            resolutionunit="CENTIMETER",
            metadata=None,
        )
    return path


def naive(slide, grid, indices: np.ndarray, encoder: TileEncoder) -> tuple[np.ndarray, float]:
    """One tile at a time, as sequoia-pub's feature and spatial scripts do."""
    spec = encoder.spec
    steps = [transforms.Resize(spec.input_px)] if spec.input_px != grid.tile_px else []
    transform = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    model = encoder.network
    out = []
    start = time.perf_counter()
    for index in indices:
        x, y = (int(v) for v in grid.coords[index])
        patch = Image.fromarray(slide.read_region((x, y), grid.level, (grid.read_px, grid.read_px)))
        if grid.read_px != grid.tile_px:  # the reference reads 256 * AppMag / 20 px, then resizes to 256
            patch = patch.resize((grid.tile_px, grid.tile_px), Image.BILINEAR)
        tensor = transform(patch.convert("RGB")).to(encoder.device)
        with torch.no_grad():
            out.append(model(tensor[None])[0].cpu().numpy())
    return np.stack(out), time.perf_counter() - start


def reference_loop(
    pixels: np.ndarray, encoder: TileEncoder, model: torch.nn.Module
) -> tuple[np.ndarray, float]:
    """The reference's feature loop as it is: tiles already cut (sequoia-pub reads them from its HDF5 file,
    so no slide decoding is timed), one tile per forward pass, PIL ``Resize → ToTensor → Normalize``, float32,
    ``no_grad``, ``.cpu().numpy()`` per tile."""
    spec = encoder.spec
    steps = [transforms.Resize(spec.input_px)] if spec.input_px != pixels.shape[1] else []
    transform = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    out = []
    start = time.perf_counter()
    for tile in pixels:
        tensor = transform(Image.fromarray(tile)).to(encoder.device)
        with torch.no_grad():
            out.append(model(tensor[None])[0].cpu().numpy())
    return np.stack(out), time.perf_counter() - start


def pipeline(
    slide, grid, indices: np.ndarray, encoder: TileEncoder, settings: Settings
) -> tuple[np.ndarray, float]:
    read = dataclasses.replace(settings.tiles, batch_size=settings.encoder_batch_size)
    overlap = reads_ahead(encoder.device)  # as predict does: reading and computing take turns on a CPU
    start = time.perf_counter()
    batches = iter_tile_batches(slide, grid, indices, read, prefetch=overlap)
    features, _ = extract_features(encoder, batches, indices, overlap=overlap)
    return features, time.perf_counter() - start


def compute_only(
    encoder: TileEncoder, pixels: np.ndarray, batch_size: int, single: bool
) -> tuple[float, float]:
    """Seconds for (one tile per call, batched) forward passes over preloaded uint8 tiles (inf if skipped)."""
    t_single = float("inf")
    if single:
        start = time.perf_counter()
        for tile in pixels:
            encoder.embed(tile[None])
        t_single = time.perf_counter() - start
    start = time.perf_counter()
    for lo in range(0, len(pixels), batch_size):
        encoder.embed(pixels[lo : lo + batch_size])
    return t_single, time.perf_counter() - start


def flops_per_tile(encoder: TileEncoder) -> float:
    x = torch.zeros(1, 3, encoder.spec.input_px, encoder.spec.input_px, device=encoder.device)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        encoder.network(x)
    return float(counter.get_total_flops())


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        a @ b
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


@dataclass
class Run:
    """Best-of timings (seconds) and features of one precision."""

    encoder: TileEncoder
    pipeline: float = float("inf")
    single: float = float("inf")
    batched: float = float("inf")
    features: np.ndarray | None = None


@dataclass(frozen=True)
class Outcome:
    name: str
    ratios: dict[str, float]  # precision -> pipeline vs naive
    reference: dict[str, float]  # precision -> pipeline vs the reference loop (pre-cut tiles, batch 1, fp32)
    gflops: dict[str, float]  # precision -> batched encoder GFLOP/s


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def bench(
    name: str,
    slide,
    grid,
    indices: np.ndarray,
    settings: Settings,
    device: torch.device,
    repeats: int,
) -> Outcome:
    """Best of ``repeats`` alternating rounds of each measurement (the machine may be shared)."""
    precisions = ["fp32"] + (["bf16"] if has_native_bf16(device) else [])
    runs = {p: Run(random_encoder(ENCODERS[name], seed=0, device=device, precision=p)) for p in precisions}
    for run in runs.values():  # warm-up (allocations, kernels)
        run.encoder.embed(np.zeros((1, grid.tile_px, grid.tile_px, 3), np.uint8))
    pixels = np.concatenate(
        [b.pixels for b in iter_tile_batches(slide, grid, indices, settings.tiles)], axis=0
    )
    # the reference runs the network as loaded (contiguous memory format), not our channels-last copy
    ref_model = copy.deepcopy(runs["fp32"].encoder.network).to(memory_format=torch.contiguous_format)
    t_naive = t_ref = float("inf")
    for _ in range(repeats):
        slow, seconds = naive(slide, grid, indices, runs["fp32"].encoder)
        t_naive = min(t_naive, seconds)
        _, seconds = reference_loop(pixels, runs["fp32"].encoder, ref_model)
        t_ref = min(t_ref, seconds)
        for precision, run in runs.items():
            run.features, seconds = pipeline(slide, grid, indices, run.encoder, settings)
            run.pipeline = min(run.pipeline, seconds)
            single, batched = compute_only(
                run.encoder, pixels, settings.encoder_batch_size, single=precision == "fp32"
            )
            run.single, run.batched = min(run.single, single), min(run.batched, batched)
    flops = flops_per_tile(runs["fp32"].encoder)
    n = len(indices)
    default = "bf16" if computes_in_bf16(device, "auto") else "fp32"
    print(
        f"\n[{name}] {n} tiles, batch {settings.encoder_batch_size}, {device}, {flops / 1e9:.2f} GFLOP/tile, "
        f"best of {repeats}"
    )
    print(f"  reference loop, fp32   {n / t_ref:9.2f} tiles/s   ({t_ref:.2f} s)  pre-cut tiles, batch 1")
    print(f"  read_region loop, fp32 {n / t_naive:9.2f} tiles/s   ({t_naive:.2f} s)  read_region per tile")
    for precision, run in runs.items():
        mark = "   <- default (--precision auto)" if precision == default else ""
        print(
            f"  pipeline {precision}          {n / run.pipeline:9.2f} tiles/s   ({run.pipeline:.2f} s)  "
            f"{t_ref / run.pipeline:.2f}x reference, {t_naive / run.pipeline:.2f}x read_region{mark}"
        )
    fp32 = runs["fp32"]
    print(
        f"  compute only fp32      {n / fp32.single:9.2f} tiles/s one-by-one, {n / fp32.batched:9.2f} tiles/s "
        f"batched ({fp32.single / fp32.batched:.2f}x)"
    )
    if "bf16" in runs:
        print(f"  compute only bf16      {n / runs['bf16'].batched:9.2f} tiles/s batched")
    gflops = {p: flops * n / run.batched / 1e9 for p, run in runs.items()}
    print(
        "  encoder GFLOP/s        "
        + ", ".join(f"{p} {g:.1f}" for p, g in gflops.items())
        + " (batched compute)"
    )
    diff = float(np.abs(slow - fp32.features).max())
    print(f"  max |naive - pipeline fp32| feature difference: {diff:.2e} (resize rounding, batch GEMM order)")
    if "bf16" in runs:
        bf16 = runs["bf16"].features
        rel = float(np.linalg.norm(bf16 - fp32.features) / np.linalg.norm(fp32.features))
        print(
            f"  bf16 vs fp32 features: relative L2 {rel:.2e}, min cosine {cosine_min(bf16, fp32.features):.6f}"
        )
    return Outcome(
        name,
        {p: t_naive / run.pipeline for p, run in runs.items()},
        {p: t_ref / run.pipeline for p, run in runs.items()},
        gflops,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=None, help="a real slide instead of the mosaic")
    parser.add_argument("--mosaic", type=int, default=3, help="copies per side of the demo-slide mosaic")
    parser.add_argument("--mpp", type=float, default=None, help="pixel size override for slides without one")
    parser.add_argument("--batch-size", type=int, default=32, help="tiles per batch, every encoder")
    parser.add_argument("--uni-tiles", type=int, default=32, help="tiles for the ViT-L run (0 = skip)")
    parser.add_argument("--uni-repeats", type=int, default=1, help="rounds for the ViT-L run (~100 s each)")
    parser.add_argument(
        "--resnet-tiles", type=int, default=256, help="tiles for the ResNet-50 run (0 = skip)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per measurement (best is kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-encoder-") as tmp:
        slide_path = args.slide or write_mosaic(
            Path(tmp) / f"cmu-mosaic-{args.mosaic}x{args.mosaic}.tif", args.mosaic
        )
        run(args, slide_path)


def run(args: argparse.Namespace, slide_path: Path) -> None:
    device = torch.device(args.device)
    settings = dataclasses.replace(Settings(), encoder_batch_size=args.batch_size, device=args.device)
    dtypes = {"fp32": torch.float32} | ({"bf16": torch.bfloat16} if has_native_bf16(device) else {})
    default = "bf16" if computes_in_bf16(device, "auto") else "fp32"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, slide {slide_path.name}, "
        f"native bf16: {'yes' if 'bf16' in dtypes else 'no'}"
    )
    peak = {p: matmul_gflops(device, dt) for p, dt in dtypes.items()}
    outcomes = []
    with open_slide(slide_path, mpp=args.mpp) as slide:
        mask = compute_tissue_mask(slide, settings.tissue)
        grid = build_tile_grid(slide, mask, settings.tiles)
        every = np.arange(grid.n_tiles)  # all grid tiles: tissue and background decode alike
        if args.uni_tiles > 0:
            uni = every[: args.uni_tiles]
            outcomes.append(bench("uni", slide, grid, uni, settings, device, args.uni_repeats))
        if args.resnet_tiles > 0:
            resnet = every[: args.resnet_tiles]
            outcomes.append(bench("resnet50", slide, grid, resnet, settings, device, args.repeats))
        outcomes.append(bench("demo-vit", slide, grid, every, settings, device, args.repeats))
    # measured before and after: the best is the machine's figure
    peak = {p: max(g, matmul_gflops(device, dtypes[p])) for p, g in peak.items()}
    print(
        "\nplain matmul (best of the runs before and after): "
        + ", ".join(f"{p} {g:.1f} GFLOP/s" for p, g in peak.items())
    )
    for outcome in outcomes:
        shares = ", ".join(
            f"{p} {g:.1f} GFLOP/s = {g / peak[p]:.0%} of {p} matmul" for p, g in outcome.gflops.items()
        )
        print(f"{outcome.name} batched encoder: {shares}")
    print(
        f"\npipeline (slide to features) vs the reference loop (pre-cut tiles, batch 1, fp32, no_grad); "
        f"default precision here: {default}; targets: default >= 2x, fp32 >= 1.2x"
    )
    for outcome in outcomes:
        fp32 = outcome.reference["fp32"]
        targeted = outcome.name in TARGETED  # the issue sets targets for these two; UNI is for information
        print(
            f"  {outcome.name:9s} default {outcome.reference[default]:.2f}x "
            f"[{_verdict(targeted, outcome.reference[default] >= 2)}]   fp32 {fp32:.2f}x "
            f"[{_verdict(targeted, fp32 >= 1.2)}]   (vs a read_region loop: default "
            f"{outcome.ratios[default]:.2f}x, fp32 {outcome.ratios['fp32']:.2f}x)"
        )


def _verdict(targeted: bool, met: bool) -> str:
    return ("met" if met else "NOT met") if targeted else "no target"


if __name__ == "__main__":
    main()
