"""The hostile-input corpus, made by code (no binary files in the repository).

Each :class:`Case` writes its inputs into a fresh folder and returns the command line to run. The promise
checked for every case (see ``test_hostile_cli.py``): exit code 2, exactly one stderr line starting with
``error:``, nothing on stdout, no traceback, and nothing written next to the inputs.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

MPP = 0.5
RESOLUTION = {"resolution": (1e4 / MPP, 1e4 / MPP), "resolutionunit": "CENTIMETER"}


@dataclass(frozen=True)
class Case:
    """One hostile input: ``make(folder)`` writes it and returns the CLI arguments."""

    name: str
    make: Callable[[Path], list[str]]
    heavy: bool = False  # a resource bomb: also run as a real process with an RSS bound


# ---- slides ------------------------------------------------------------------------------------------------
def tissue_pixels(size: int = 512, seed: int = 0) -> np.ndarray:
    """Pink-and-purple noise that the tissue detector keeps (H&E-like saturation)."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 120, 170], dtype=np.float64)
    noise = rng.normal(0, 25, (size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _tiff(path: Path, data: np.ndarray, **kwargs) -> Path:
    tifffile.imwrite(path, data, tile=(256, 256), **{**RESOLUTION, **kwargs})
    return path


def declared_bomb(path: Path, side: int = 40_000, tile: int = 256, levels: int = 1) -> Path:
    """A small zlib TIFF declaring ``side`` x ``side`` px: every tile is the same few hundred bytes."""
    encoded = zlib.compress(np.zeros((tile, tile, 3), np.uint8).tobytes(), 9)
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for level in range(levels):
            size = max(tile, side >> level)
            count = (-(-size // tile)) ** 2
            writer.write(
                iter([encoded] * count),
                shape=(size, size, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="zlib",
                photometric="rgb",
                subfiletype=1 if level else 0,
                **RESOLUTION,
            )
    return path


def corrupt_tiles(path: Path, tiles: tuple[int, ...]) -> Path:
    """A JPEG tiled TIFF of tissue with the given tiles' bytes replaced by noise."""
    _tiff(path, tissue_pixels(1024), compression="jpeg", photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for index in tiles:
        start, count = offsets[index], counts[index]
        data[start : start + count] = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def _inspect(maker: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda folder: ["inspect", str(maker(folder))]


def _bytes_file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


def _truncated(folder: Path) -> Path:
    path = _tiff(folder / "cut.tif", tissue_pixels(1024), compression="jpeg", photometric="rgb")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _dicom_garbage(folder: Path) -> Path:
    series = folder / "series"
    series.mkdir()
    for index in range(3):
        (series / f"{index}.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    return series


SLIDE_CASES = [
    Case("empty-file", _inspect(_bytes_file("empty.svs", b""))),
    Case("text-as-svs", _inspect(_bytes_file("notes.svs", b"patient notes, not a slide\n" * 40))),
    Case("tiff-magic-then-noise", _inspect(_bytes_file("noise.tif", b"II*\0" + bytes(range(256)) * 64))),
    Case("bigtiff-magic-then-zeros", _inspect(_bytes_file("zeros.tif", b"II+\0" + b"\0" * 4096))),
    Case("dicom-preamble-garbage", _inspect(_bytes_file("x.dcm", b"\0" * 128 + b"DICM" + b"\xff" * 512))),
    Case("dicom-folder-garbage", _inspect(_dicom_garbage)),
    Case("empty-folder", _inspect(lambda folder: (folder / "nothing").mkdir() or folder / "nothing")),
    Case("missing-path", lambda folder: ["inspect", str(folder / "absent.svs")]),
    Case("truncated-tiff", _inspect(_truncated)),
    Case("declared-40k-bomb", _inspect(lambda folder: declared_bomb(folder / "bomb.tif")), heavy=True),
    Case(
        "huge-tile-bomb",
        _inspect(lambda folder: declared_bomb(folder / "tile.tif", side=8192, tile=8192)),
        heavy=True,
    ),
    Case(
        "pyramid-zlib-bomb",
        _inspect(lambda folder: declared_bomb(folder / "pyr.tif", side=65_536, levels=7)),
        heavy=True,
    ),
    Case(
        "corrupt-jpeg-tiles",
        _inspect(lambda folder: corrupt_tiles(folder / "corrupt.tif", tuple(range(16)))),
    ),
    Case(
        "cmyk",
        _inspect(
            lambda folder: _tiff(
                folder / "cmyk.tif", np.zeros((512, 512, 4), np.uint8), photometric="separated"
            )
        ),
    ),
    Case(
        "float-samples",
        _inspect(
            lambda folder: _tiff(folder / "float.tif", np.zeros((512, 512, 3), np.float32), photometric="rgb")
        ),
    ),
    Case(
        "signed-samples",
        _inspect(
            lambda folder: _tiff(folder / "int16.tif", np.zeros((512, 512, 3), np.int16), photometric="rgb")
        ),
    ),
    Case(
        "no-pixel-size",
        lambda folder: [
            "inspect",
            str(
                tifffile.imwrite(folder / "nompp.tif", tissue_pixels(), tile=(256, 256))
                or folder / "nompp.tif"
            ),
        ],
    ),
    Case(
        "two-extra-channels",
        _inspect(
            lambda folder: _tiff(
                folder / "five.tif",
                np.zeros((512, 512, 5), np.uint8),
                photometric="rgb",
                extrasamples=["unassalpha", "unspecified"],
            )
        ),
    ),
]


# ---- options -------------------------------------------------------------------------------------------------
def _with_slide(*extra: str, command: str = "inspect") -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        slide = _tiff(folder / "ok.tif", tissue_pixels())
        return [command, str(slide), *extra]

    return make


OPTION_CASES = [
    Case("mpp-text", _with_slide("--mpp", "abc")),
    Case("mpp-zero", _with_slide("--mpp", "0")),
    Case("mpp-negative", _with_slide("--mpp", "-1")),
    Case("mpp-nan", _with_slide("--mpp", "nan")),
    Case("mpp-inf", _with_slide("--mpp", "inf")),
    Case("max-tiles-zero", _with_slide("--max-tiles", "0", command="predict")),
    Case("max-tiles-text", _with_slide("--max-tiles", "many", command="predict")),
    Case("device-unknown", _with_slide("--device", "tpu", command="predict")),
    Case("unknown-option", _with_slide("--no-such-option")),
]


# ---- patient fields (score refuses them before any work) -------------------------------------------------
def _score_with(option: str, value: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        slide = _tiff(folder / "ok.tif", tissue_pixels())
        return ["score", str(slide), "--out", str(folder / "report"), option, value]

    return make


PATIENT_CASES = [
    Case("name-bel", _score_with("--patient-name", "Doe\aJane")),
    Case("name-esc", _score_with("--patient-name", "Doe\x1b[31mJane")),
    Case("name-crlf", _score_with("--patient-name", "Doe\r\nJane")),
    Case("name-backslash", _score_with("--patient-name", "Doe\\Jane")),
    Case("name-96k", _score_with("--patient-name", "A" * 96_000)),
    Case("name-10k", _score_with("--patient-name", "Doe, " + "J" * 10_000)),
    Case("name-too-many-components", _score_with("--patient-name", "a^b^c^d^e^f")),
    Case("patient-id-65", _score_with("--patient-id", "1" * 65)),
    Case("patient-id-tab", _score_with("--patient-id", "12\t34")),
    Case("accession-17", _score_with("--accession", "A" * 17)),
    Case("accession-lf", _score_with("--accession", "A1\nB2")),
    Case("specimen-nul-like", _score_with("--specimen", "block\x7f1")),
    Case("specimen-c1", _score_with("--specimen", "block\x851")),
    Case("birth-date-bad", _score_with("--birth-date", "1970-13-40")),
    Case("sex-bad", _score_with("--sex", "X")),
]


# ---- tables (stratify) -----------------------------------------------------------------------------------
def cohort_rows(n: int = 40, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = ["time,event,risk,group"]
    for index in range(n):
        lines.append(f"{rng.uniform(0.5, 12):.3f},{index % 2},{rng.normal():.4f},{'ab'[index % 2]}")
    return "\n".join(lines) + "\n"


def _stratify(text: str | bytes | Callable[[Path], Path], *extra: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        if callable(text):
            table = text(folder)
        else:
            table = folder / "cohort.csv"
            table.write_bytes(text.encode() if isinstance(text, str) else text)
        args = ["stratify", str(table), "--time-col", "time", "--event-col", "event"]
        return [*args, "--out", str(folder / "out"), *(extra or ("--risk-col", "risk"))]

    return make


def _sparse_table(folder: Path) -> Path:
    path = folder / "huge.csv"
    with open(path, "wb") as handle:
        handle.write(b"time,event,risk\n")
        handle.truncate(300 << 20)  # 300 MiB, sparse: refused by its size before parsing
    return path


def _wide_table(folder: Path) -> Path:
    path = folder / "wide.csv"
    header = ",".join(["time", "event", "risk"] + [f"g{i}" for i in range(100_001)])
    path.write_text(header + "\n" + ",".join(["1"] * 100_004) + "\n")
    return path


TABLE_CASES = [
    Case("table-empty", _stratify("")),
    Case("table-header-only", _stratify("time,event,risk\n")),
    Case("table-binary", _stratify(bytes(range(256)) * 8)),
    Case("table-latin1", _stratify("time,event,risk,name\n1,0,0.1,Jos\xe9\n".encode("latin-1"))),
    Case("table-single-row", _stratify("time,event,risk\n5,1,0.3\n")),
    Case("table-nan-times", _stratify(cohort_rows().replace("\n1", "\nnan", 3))),
    Case("table-semicolons", _stratify(cohort_rows().replace(",", ";"))),
    Case("table-missing-column", _stratify(cohort_rows(), "--risk-col", "riks")),
    Case("table-event-text", _stratify(cohort_rows().replace(",0,", ",maybe,"))),
    Case("table-negative-time", _stratify(cohort_rows().replace("\n", "\n-", 5).replace("time", "time", 1))),
    Case("table-300mb-sparse", _stratify(_sparse_table), heavy=True),
    Case("table-100k-columns", _stratify(_wide_table)),
    Case("table-unbalanced-quotes", _stratify('time,event,risk\n"1,0,0.1\n2,1,0.2\n')),
]


# ---- risk models (stratify --model) -----------------------------------------------------------------------
def _model_case(text: str | bytes | Callable[[dict], object]) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        path = folder / "model.json"
        if callable(text):
            data = json.loads(default_risk_model().read_text())
            changed = text(data)
            path.write_text(json.dumps(data if changed is None else changed, allow_nan=True))
        else:
            path.write_bytes(text.encode() if isinstance(text, str) else text)
        table = folder / "cohort.csv"
        table.write_text(cohort_rows())
        args = ["stratify", str(table), "--time-col", "time", "--event-col", "event", "--risk-col", "risk"]
        return [*args, "--model", str(path), "--out", str(folder / "out")]

    return make


def default_risk_model() -> Path:
    from sequoia_clinic.locations import package_path

    return Path(package_path("sequoia_clinic._models", "risk", "gse7390-wang76.json"))


def _first_gene(data: dict, value: float) -> None:
    data["coefficients"][next(iter(data["coefficients"]))] = value


def _first_sd(data: dict, value: float) -> None:
    data["standardisation"]["sd"][0] = value


MODEL_CASES = [
    Case("model-empty", _model_case("")),
    Case("model-not-json", _model_case("coefficients: 1\n")),
    Case("model-array", _model_case("[1, 2, 3]")),
    Case("model-deep-arrays", _model_case("[" * 200_000 + "]" * 200_000)),
    Case("model-deep-objects", _model_case('{"a":' * 50_000 + "1" + "}" * 50_000)),
    Case("model-nan-coefficient", _model_case(lambda d: _first_gene(d, float("nan")))),
    Case("model-inf-coefficient", _model_case(lambda d: _first_gene(d, float("inf")))),
    Case("model-nan-sd", _model_case(lambda d: _first_sd(d, float("nan")))),
    Case("model-zero-sd", _model_case(lambda d: _first_sd(d, 0.0))),
    Case("model-wrong-format", _model_case(lambda d: d.update(format="something-else"))),
    Case("model-genes-not-strings", _model_case(lambda d: d.update(genes=[1, 2, 3]))),
    Case("model-missing-baseline", _model_case(lambda d: d.pop("baseline_survival") and None)),
    Case("model-latin1", _model_case('{"format": "caf\xe9"}'.encode("latin-1"))),
    Case("model-40mb", _model_case(b" " * (40 << 20) + b"{}"), heavy=True),
]


# ---- bundle manifests (predict --bundle FOLDER) ------------------------------------------------------------
def _bundle_case(change: Callable[[Path, dict], object]) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        from sequoia_clinic.bundles.store import SHIPPED_MODELS

        bundle = folder / "bundle"
        bundle.mkdir()
        source = SHIPPED_MODELS / "sequoia-brca-demo"
        data = json.loads((source / "manifest.json").read_text())
        for item in source.iterdir():
            if item.is_file() and item.name != "manifest.json":
                (bundle / item.name).write_bytes(item.read_bytes())
        changed = change(bundle, data)
        text = changed if isinstance(changed, str) else json.dumps(data, allow_nan=True)
        (bundle / "manifest.json").write_text(text)
        slide = _tiff(folder / "ok.tif", tissue_pixels())
        return ["predict", str(slide), "--bundle", str(bundle), "--out", str(folder / "x.csv")]

    return make


def _outside_link(bundle: Path, data: dict) -> None:
    outside = bundle.parent / "elsewhere.csv"
    outside.write_text("gene\n")
    (bundle / "linked.csv").symlink_to(outside)
    data["genes"]["file"] = "linked.csv"


MANIFEST_CASES = [
    Case("manifest-deep", _bundle_case(lambda b, d: "[" * 100_000 + "]" * 100_000)),
    Case("manifest-not-json", _bundle_case(lambda b, d: "{name: demo")),
    Case("manifest-nan", _bundle_case(lambda b, d: json.dumps({**d, "version": float("nan")}))),
    Case("manifest-traversal", _bundle_case(lambda b, d: d["genes"].update(file="../../etc/passwd"))),
    Case("manifest-absolute", _bundle_case(lambda b, d: d["genes"].update(file="/etc/passwd"))),
    Case("manifest-link-outside", _bundle_case(_outside_link)),
    Case("manifest-bad-sha", _bundle_case(lambda b, d: d["genes"].update(sha256="0" * 64))),
    Case("manifest-schema", _bundle_case(lambda b, d: d.update(trained="yes"))),
    Case("manifest-unknown-encoder", _bundle_case(lambda b, d: d["encoder"].update(name="nope"))),
]

ALL_CASES = SLIDE_CASES + OPTION_CASES + PATIENT_CASES + TABLE_CASES + MODEL_CASES + MANIFEST_CASES
