"""Start-up and memory per worker of the real command line: this build vs an earlier revision, side by side.

Every measurement is the real command run as its own child process (``python -m sequoia_clinic ...``, the
same entry point as the ``sequoia-clinic`` script), with the caches in a temporary folder
(``SEQUOIA_CLINIC_CACHE`` and ``XDG_CACHE_HOME`` point there, ``score`` also gets ``--cache-dir``), so the
user's own cache is neither read nor written.

1. Start-up (issue 14, item 4): ``--help``, ``inspect DEMO`` and ``score DEMO --allow-inadequate`` (the
   packaged demo slide and bundle), each the median of ``--runs`` runs, in two builds interleaved run by run:

   * this build -- the working tree, as shipped;
   * baseline   -- the package as it was at ``--baseline REV`` (default: the last commit before the
                   start-up work of issue 14, with every heavy library imported up front), extracted with
                   ``git archive`` into the temporary folder and run with ``PYTHONPATH`` pointing at it, in
                   the same interpreter and environment. Its data folders (``models/``, ``templates/``) come
                   from the installed package; they did not change between the two revisions.

   ``score`` runs once in each build before the timed runs (so the demo weights and the slide's feature
   cache exist; this build's, on the empty cache, is reported as the cold first run). Printed: wall medians,
   the ratio this/baseline, the targets (``score`` <= 5.0 s and <= 45 % of the baseline; ``--help`` and
   ``inspect`` < 1.0 s) and the stage timings of the last ``score``'s ``result.json``.
2. Lean workers (item 5): peak RSS of ``predict SLIDE --out X.csv --no-cache`` (demo bundle: the encoder and
   k-means really run) and of ``inspect SLIDE`` on the demo slide and on synthetic pyramidal SVS slides
   (``bench_tiles.write_svs``: demo-slide pixels mirrored and repeated; 10,000², 40,000 x 30,000 and 80,000²
   px by default, ``--sizes``), each slide written, measured and deleted before the next (the 80k² one
   takes minutes to write and about 2 GB; the free space of ``--tmp`` is checked first and a size that does
   not fit is skipped, with a note). Printed: MB per slide, largest/smallest synthetic slide (flat: <= ~1.1x),
   the target ``predict`` <= 1000 MB, and the RSS of a bare ``python -c "import torch"`` with the torch build
   (the CUDA build's import alone is several hundred MB more than a CPU-only build's).
3. UNI-shaped encoder (item 5, ``--uni``; off by default: it writes a ~1.2 GB weights file): a bundle made
   with ``import_bundle`` from random ViT-L/16 (``uni``) weights saved as ``pytorch_model.bin`` and
   ``--uni-folds`` random ViS folds in the reference checkpoint layout (SEQUOIA's config, input_dim 1024,
   20,820 genes); peak RSS of ``predict --bundle <folder> --max-tiles --uni-max-tiles`` on a 10,000² slide
   against the target weights size + 1.0 GB (the tile cap only bounds the run time: a few encoder batches
   reach the peak; the features of 4,000 tiles are 16 MB).

How peak RSS and wall time are measured: each command runs under a tiny launcher (``python -S`` loading only
``os``, ``sys`` and ``time``) that starts it with ``os.posix_spawn``, reaps it with ``os.wait4(pid, 0)`` and
writes that one process's own ``ru_maxrss`` (the high-water mark of its resident set, KiB on Linux, including
any of its own children it waited for), its exit code and the ``time.perf_counter`` seconds from spawn to
reap. The bench's ``getrusage(RUSAGE_CHILDREN)`` would give the maximum over every child so far, not each
one's; and Linux carries the high-water mark of the pre-``exec`` memory into ``ru_maxrss`` (with vfork that
is the parent's own peak), so a command started straight from this bench would never report less than the
bench's own peak -- hence the launcher (~10 MB, printed as "bare python"), and slides are written in a
separate process too. ``/usr/bin/time -f %M`` would do the same job but is not installed everywhere.
Deterministic inputs (seeded weights, fixed slides), offline.

    .venv/bin/python benches/bench_start.py [--runs 5] [--baseline REV]
        [--sizes 10000x10000,40000x30000,80000x80000] [--parts start,memory] [--uni] [--tmp /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_SLIDE = REPO / "sequoia_clinic" / "demo" / "CMU-1-Small-Region.svs"
BASELINE = "fa618f1"  # the last commit before issue 14's start-up work (eager imports, PNG figures)
# Runs argv[2:] and writes its peak RSS (KiB), exit code and wall seconds to argv[1]. Only os, sys and time
# (built in) are loaded, with -S (no site): the command's RSS never starts from this bench's own peak.
LAUNCHER = (
    "import os, sys, time\n"
    "started = time.perf_counter()\n"
    "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "wall = time.perf_counter() - started\n"
    "code = os.waitstatus_to_exitcode(status)\n"
    "with open(sys.argv[1], 'w') as report:\n"
    "    report.write(f'{usage.ru_maxrss} {code} {wall}')\n"
)
TORCH_CODE = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"
# SEQUOIA's published ViS config (../shared/reference/sequoia.md); gevaertlab/sequoia-brca-<fold> layout
UNI_VIS_CONFIG = {
    "num_outputs": 20820,
    "input_dim": 1024,
    "depth": 6,
    "nheads": 16,
    "dimensions_f": 64,
    "dimensions_s": 64,
    "dimensions_c": 64,
}
JPEG_BYTES_PER_PX = 0.25  # what write_svs's Q85 tiles of the demo pixels take, all levels (measured: 0.18)
SPACE_MARGIN = 2 << 30  # leave this much free beside a slide


@dataclass(frozen=True)
class Run:
    wall_s: float
    rss_mb: float
    stdout: str


class Bench:
    """Runs commands as children in one temporary folder, with the caches inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / "cache"
        self.env = dict(os.environ)
        self.env["SEQUOIA_CLINIC_CACHE"] = str(self.cache)
        self.env["XDG_CACHE_HOME"] = str(root / "xdg")
        self.count = 0

    def run(self, argv: list[str]) -> Run:
        """``argv`` as a grandchild under :data:`LAUNCHER`: wall seconds, its own peak RSS, its output.

        A failure stops the bench with the command's last lines.
        """
        self.count += 1
        log, report = self.root / f"child-{self.count}.log", self.root / f"child-{self.count}.rusage"
        with open(log, "wb") as out:
            launcher = [sys.executable, "-S", "-c", LAUNCHER, str(report), *argv]
            subprocess.run(launcher, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.root)
        text = log.read_text(errors="replace")
        maxrss_kb, code, wall = report.read_text().split() if report.exists() else ("0", "-1", "0")
        log.unlink()
        report.unlink(missing_ok=True)
        if int(code) != 0:
            tail = "\n".join(text.splitlines()[-15:])
            raise SystemExit(f"command failed (exit {code}): {' '.join(argv)}\n{tail}")
        return Run(float(wall), int(maxrss_kb) / 1024.0, text)

    def cli(self, args: list[str], baseline: Path | None = None) -> Run:
        """``sequoia-clinic ARGS`` of this build, or of the package tree at ``baseline``."""
        if baseline is None:
            return self.run([sys.executable, "-m", "sequoia_clinic", *args])
        self.env["PYTHONPATH"] = str(baseline)
        try:
            return self.run([sys.executable, "-m", "sequoia_clinic", *args])
        finally:
            del self.env["PYTHONPATH"]


def _fmt_range(walls: list[float]) -> str:
    return f"{min(walls):.2f}-{max(walls):.2f}"


def _flatten(timings: object, prefix: str = "") -> list[tuple[str, float]]:
    """result.json's ``timings``, flat ({"a": 1, "b": {"c": 2}} -> a, b.c), whatever its nesting."""
    if isinstance(timings, dict):
        rows: list[tuple[str, float]] = []
        for key, value in timings.items():
            rows += _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else []
            if isinstance(value, int | float):
                rows.append((f"{prefix}{key}", float(value)))
        return rows
    return []


def _check(ok: bool) -> str:
    return "ok" if ok else "MISSED"


# ---- 1. start-up ------------------------------------------------------------------------------------------
def extract_baseline(root: Path, revision: str) -> Path:
    """The package tree of ``revision`` (``git archive``) under ``root``; the bench stops if git cannot."""
    target = root / "baseline"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "sequoia_clinic"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"cannot extract --baseline {revision}: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def bench_start(bench: Bench, runs: int, revision: str) -> None:
    demo = str(DEMO_SLIDE)
    outs = bench.root / "reports"
    baseline = extract_baseline(bench.root, revision)

    def score_args(tag: str) -> list[str]:
        folder = outs / tag
        shutil.rmtree(folder, ignore_errors=True)
        return ["score", demo, "--out", str(folder), "--allow-inadequate", "--cache-dir", str(bench.cache)]

    commands = {
        "--help": lambda tag: ["--help"],
        "inspect DEMO": lambda tag: ["inspect", demo],
        "score DEMO": score_args,
    }
    cold = bench.cli(score_args("cold"))
    bench.cli(score_args("baseline-warm-up"), baseline)
    results: dict[str, dict[str, list[Run]]] = {name: {"this": [], "baseline": []} for name in commands}
    for index in range(runs):
        for name, make in commands.items():
            results[name]["this"].append(bench.cli(make(f"this-{index}")))
            results[name]["baseline"].append(bench.cli(make(f"baseline-{index}"), baseline))
    timings = json.loads((outs / f"this-{runs - 1}" / "result.json").read_text())["timings"]
    shutil.rmtree(outs, ignore_errors=True)

    print(
        f"Start-up: wall seconds, median of {runs} runs (min-max), this build vs the baseline revision "
        f"{revision}, interleaved"
    )
    print(
        f"  {'command':<14} {'this s':>7} {'range':>11} {'base s':>8} {'range':>11} {'this/base':>10} "
        f"{'this RSS':>9} {'base RSS':>9}  target"
    )
    targets = {
        "--help": lambda this, ratio: (this < 1.0, "< 1.0 s"),
        "inspect DEMO": lambda this, ratio: (this < 1.0, "< 1.0 s"),
        "score DEMO": lambda this, ratio: (this <= 5.0 and ratio <= 0.45, "<= 5.0 s and <= 0.45x baseline"),
    }
    for name, by_build in results.items():
        this_walls = [r.wall_s for r in by_build["this"]]
        base_walls = [r.wall_s for r in by_build["baseline"]]
        this, base = statistics.median(this_walls), statistics.median(base_walls)
        ok, target = targets[name](this, this / base)
        this_rss = statistics.median(r.rss_mb for r in by_build["this"])
        base_rss = statistics.median(r.rss_mb for r in by_build["baseline"])
        print(
            f"  {name:<14} {this:>7.2f} {_fmt_range(this_walls):>11} {base:>8.2f} "
            f"{_fmt_range(base_walls):>11} {this / base:>9.2f}x {this_rss:>6.0f} MB {base_rss:>6.0f} MB  "
            f"{target}: {_check(ok)}"
        )
    print(
        f"  score DEMO, cold first run (empty cache: demo weights generated, features computed): "
        f"{cold.wall_s:.2f} s, peak RSS {cold.rss_mb:.0f} MB"
    )
    rows = _flatten(timings)
    print(
        f"  stage timings of the last score (result.json 'timings', s), wall {results['score DEMO']['this'][-1].wall_s:.2f} s:"
    )
    for start in range(0, len(rows), 4):
        print("    " + "  ".join(f"{key} {value:.2f}" for key, value in rows[start : start + 4]))


# ---- 2. lean workers --------------------------------------------------------------------------------------
def _fits(folder: Path, width: int, height: int) -> tuple[bool, float]:
    need = width * height * JPEG_BYTES_PER_PX + SPACE_MARGIN
    return shutil.disk_usage(folder).free >= need, need / 1e9


def write_slide(bench: Bench, path: Path, width: int, height: int) -> dict:
    """``bench_tiles.write_svs`` in its own process (its memory stays out of this bench's, see the docstring)."""
    size = f"{width}x{height}"
    made = bench.run([sys.executable, __file__, "--worker", "svs", "--path", str(path), "--size", size])
    return dict(json.loads(made.stdout.strip().splitlines()[-1]))


def _memory_row(bench: Bench, slide: Path, label: str, extra: list[str] | None = None) -> dict:
    out = bench.root / "expression.csv"
    predict = bench.cli(["predict", str(slide), "--out", str(out), "--no-cache", *(extra or [])])
    out.unlink(missing_ok=True)
    inspect = bench.cli(["inspect", str(slide)])
    return {"label": label, "predict": predict, "inspect": inspect}


def _print_memory_row(row: dict) -> None:
    p, i = row["predict"], row["inspect"]
    print(
        f"  {row['label']:<24} {p.rss_mb:>8.0f} MB {p.wall_s:>8.1f} s {i.rss_mb:>8.0f} MB {i.wall_s:>8.1f} s",
        flush=True,
    )


def bench_memory(bench: Bench, sizes: list[tuple[int, int]], uni: argparse.Namespace | None) -> None:
    bare = bench.run([sys.executable, "-c", "pass"])
    torch_run = bench.run([sys.executable, "-c", TORCH_CODE])
    version, cuda = json.loads(torch_run.stdout.strip().splitlines()[-1])
    build = f"CUDA {cuda} build" if cuda else "CPU-only build"
    print(
        f"Peak RSS per command (its own, see the docstring; one run each); torch {version} ({build}): "
        f"bare `python -c 'import torch'` {torch_run.rss_mb:.0f} MB ({torch_run.wall_s:.2f} s), "
        f"bare python {bare.rss_mb:.0f} MB"
    )
    bench.cli(["predict", str(DEMO_SLIDE), "--out", str(bench.root / "warm.csv"), "--no-cache"])  # weights
    (bench.root / "warm.csv").unlink(missing_ok=True)
    print(f"  {'slide':<24} {'predict':>11} {'':>10} {'inspect':>11}")
    rows = [_memory_row(bench, DEMO_SLIDE, "demo 2220 x 2967")]
    _print_memory_row(rows[0])
    synthetic: list[dict] = []
    uni_size = uni.uni_size if uni is not None else None
    for width, height in sizes:
        fits, need = _fits(bench.root, width, height)
        if not fits:
            print(f"  {width} x {height}: skipped, needs ~{need:.1f} GB free in {bench.root.parent}")
            continue
        slide = bench.root / f"synthetic-{width}x{height}.svs"
        made = write_slide(bench, slide, width, height)
        row = _memory_row(bench, slide, f"{width} x {height}")
        row["label"] += f" ({made['bytes'] / 1e6:.0f} MB)"
        rows.append(row)
        synthetic.append(row)
        _print_memory_row(row)
        if uni is not None and (width, height) == uni_size:
            bench_uni(bench, slide, uni)
            uni = None
        slide.unlink()
    if uni is not None and uni_size is not None:
        slide = bench.root / f"synthetic-{uni_size[0]}x{uni_size[1]}.svs"
        write_slide(bench, slide, *uni_size)
        bench_uni(bench, slide, uni)
        slide.unlink()

    worst = max(r["predict"].rss_mb for r in rows)
    print(
        f"  predict with the demo bundle: at most {worst:.0f} MB (target <= 1000 MB: {_check(worst <= 1000)})"
    )
    if len(synthetic) >= 2:
        first, last = synthetic[0], synthetic[-1]
        for kind in ("predict", "inspect"):
            ratio = last[kind].rss_mb / first[kind].rss_mb
            print(
                f"  {kind} flatness, {last['label'].split(' (')[0]} / {first['label'].split(' (')[0]}: "
                f"{ratio:.2f}x (target <= ~1.1x: {_check(ratio <= 1.1)})"
            )
    else:
        print("  flatness: needs two or more synthetic sizes")


# ---- 3. UNI-shaped encoder --------------------------------------------------------------------------------
def make_uni_bundle(folder: Path, folds: int) -> dict:
    """Random UNI weights (pytorch_model.bin) + random ViS folds (reference layout) -> import_bundle."""
    import torch
    from safetensors.torch import save_file

    from sequoia_clinic.aggregator.configs import VisConfig
    from sequoia_clinic.aggregator.vis import build_vis
    from sequoia_clinic.bundles.importer import import_bundle
    from sequoia_clinic.encoders.model import random_encoder
    from sequoia_clinic.encoders.registry import ENCODERS

    encoder = folder / "pytorch_model.bin"
    torch.save(random_encoder(ENCODERS["uni"], seed=0).network.state_dict(), encoder)
    hub = folder / "hub"
    sources = []
    for fold in range(folds):
        torch.manual_seed(fold)
        source = hub / f"sequoia-brca-{fold}"
        source.mkdir(parents=True)
        save_file(build_vis(VisConfig(**UNI_VIS_CONFIG)).state_dict(), str(source / "model.safetensors"))
        (source / "config.json").write_text(
            json.dumps({**UNI_VIS_CONFIG, "device": "cuda:0", "num_clusters": 100})
        )
        sources.append(source)
    bundle = import_bundle(
        "brca-uni-bench", sources, encoder, folder / "models", encoder="uni", symlink_encoder=True
    )
    shutil.rmtree(hub)
    fold_bytes = [(bundle.path / f.weights.file).stat().st_size for f in bundle.folds]
    return {"path": str(bundle.path), "encoder_bytes": encoder.stat().st_size, "fold_bytes": fold_bytes}


def bench_uni(bench: Bench, slide: Path, args: argparse.Namespace) -> None:
    folder = bench.root / "uni"
    folder.mkdir()
    started = time.perf_counter()
    made = bench.run(
        [
            sys.executable,
            __file__,
            "--worker",
            "uni-bundle",
            "--path",
            str(folder),
            "--uni-folds",
            str(args.uni_folds),
        ]
    )
    info = json.loads(made.stdout.strip().splitlines()[-1])
    made_s = time.perf_counter() - started
    row = _memory_row(
        bench,
        slide,
        f"{slide.stem.split('-')[-1]} UNI",
        ["--bundle", info["path"], "--max-tiles", str(args.uni_max_tiles)],
    )
    shutil.rmtree(folder)
    weights_mb = info["encoder_bytes"] / 2**20
    folds_mb = sum(info["fold_bytes"]) / 2**20
    over = row["predict"].rss_mb - weights_mb
    print(
        f"  UNI-shaped bundle (random ViT-L/16 weights {weights_mb:.0f} MB, {len(info['fold_bytes'])} random ViS "
        f"folds {folds_mb:.0f} MB; made in {made_s:.0f} s), predict --max-tiles {args.uni_max_tiles}:"
    )
    _print_memory_row(row)
    print(
        f"  UNI predict RSS - encoder weights = {over:.0f} MB (target <= 1024 MB: {_check(over <= 1024)}); "
        f"- all weights (encoder + folds) = {over - folds_mb:.0f} MB"
    )


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command and build (median)")
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare start-up with")
    parser.add_argument(
        "--sizes", default="10000x10000,40000x30000,80000x80000", help="synthetic slides, WxH,... (memory)"
    )
    parser.add_argument(
        "--parts", default="start,memory", help="which parts: start, memory (comma-separated)"
    )
    parser.add_argument("--uni", action="store_true", help="also the UNI-shaped bundle (writes ~1.2 GB)")
    parser.add_argument("--uni-size", type=_size, default=(10000, 10000), help="slide for --uni, WxH")
    parser.add_argument("--uni-folds", type=int, default=5, help="random ViS folds in the UNI bundle")
    parser.add_argument("--uni-max-tiles", type=int, default=64, help="tile cap of the UNI predict")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="folder for temp files")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "uni-bundle":
        print(json.dumps(make_uni_bundle(Path(args.path), args.uni_folds)))
        return
    if args.worker == "svs":
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_tiles import write_svs

        print(json.dumps(write_svs(Path(args.path), *_size(args.size))))
        return

    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if unknown := parts - {"start", "memory"}:
        parser.error(f"unknown --parts {sorted(unknown)}")
    root = Path(tempfile.mkdtemp(prefix="bench-start-", dir=args.tmp))
    try:
        bench = Bench(root)
        if "start" in parts:
            bench_start(bench, args.runs, args.baseline)
        if "memory" in parts:
            sizes = [_size(s) for s in args.sizes.split(",") if s.strip()]
            bench_memory(bench, sizes, args if args.uni else None)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
