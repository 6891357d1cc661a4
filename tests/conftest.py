"""Shared fixtures: test data, synthetic slides, the GSE7390 cohort, the demo bundle and a CLI runner.

Real data lives in ../shared/data (tests may read it; the product never does). Where the package ships a
byte-identical copy of a shared file (the CMU demo slide, the SEQUOIA gene list, the genefu tables), a clone
without ../shared uses that copy, after checking it against the sha256 recorded from ../shared; the tests
that need the TCGA JPEG 2000 slide or the DICOM files skip, naming the missing file. Synthetic pyramidal
slides for other sizes are written here with tifffile from the demo slide's own pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import tiffslide
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

import sequoia_clinic
from sequoia_clinic.locations import demo_slide, sequoia_gene_list, weights_cache_dir

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(sequoia_clinic.__file__).resolve().parent
SHARED_DATA = REPO.parent / "shared" / "data"
SLIDES = SHARED_DATA / "slides"

CMU_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"  # data README
GENE_LIST_SHA256 = "d852c20484807a879dbf6102fb8e3691db139ad6e79efb42dc4fcd897e7ab615"
GENEFU_SHA256 = {  # the files in ../shared/data/signatures
    "genefu_pam50_centroids.csv": "0e8c7ae8835f31a555ad9e285e94a45be8ddab6360d0a005f48e831e9a4b2eab",
    "genefu_sig_endopredict.csv": "2784c62cb386d1e0692fe79a2f314de00590a643120d3c87bacfc8da54181306",
    "genefu_sig_gene70.csv": "c45b030ded4c15fbbc91b459cb53876d7a545c2d8a18cb63f87832ca4dffdd00",
    "genefu_sig_gene76.csv": "5ecf0bbc4dbf8033f6b62e568f1f83a53cacdb7c735e8ddfc8cab1eb9131c371",
    "genefu_sig_ggi.csv": "d45b9cbba0e93099468bc0d82100c38ecaaa1b7e04e57c6183b59e4298f85ce0",
    "genefu_sig_oncotypedx.csv": "77a15bdc3f5a901b77649ff889d9fe5462c8be2b9f9ec036463f2fd17f321b8f",
}


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs ../shared test data (no packaged copy): {path.name} not found at {path.parent}")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shared_or_packaged(shared: Path, packaged: Path, sha256: str) -> Path:
    """The shared file, else the package's copy once its bytes are shown to be the shared file's."""
    if shared.exists():
        return shared
    if _sha256(packaged) != sha256:
        pytest.fail(f"{packaged} differs from the shared file it copies (sha256 {sha256})")
    return packaged


# -- real data -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cmu_svs() -> Path:
    """CMU-1-Small-Region.svs: ../shared's copy, else the identical demo slide inside the package."""
    return _shared_or_packaged(SLIDES / "CMU-1-Small-Region.svs", demo_slide(), CMU_SHA256)


@pytest.fixture(scope="session")
def cmu_dicom() -> Path:
    return _need(SLIDES / "CMU-1-Small-Region.dicom")


@pytest.fixture(scope="session")
def tcga_svs() -> Path:
    return _need(SLIDES / "TCGA-CR-7395-01A-01-TS1.svs")


@pytest.fixture(scope="session")
def malformed_dicom() -> Path:
    return _need(SLIDES / "malformed" / "small_dicom_no_spacing.dcm")


@pytest.fixture(scope="session")
def gene_list_csv() -> Path:
    """The SEQUOIA gene list (header ``gene``), from ../shared or the identical package copy."""
    packaged = sequoia_gene_list()
    return _shared_or_packaged(SHARED_DATA / "sequoia" / "gene_list.csv", packaged, GENE_LIST_SHA256)


@pytest.fixture(scope="session")
def signatures_dir() -> Path:
    """The genefu signature tables, from ../shared or the identical package copies."""
    shared = SHARED_DATA / "signatures"
    if shared.exists():
        return shared
    packaged = PACKAGE / "signatures" / "data"
    for name, sha256 in GENEFU_SHA256.items():
        _shared_or_packaged(shared / name, packaged / name, sha256)
    return packaged


# -- synthetic slides from the demo slide's pixels -------------------------------------------------------


def write_jpeg_pyramid(path: Path, levels: Sequence[np.ndarray], mpp: float | None, tile: int = 256) -> Path:
    """A tiled JPEG TIFF: ``levels[0]`` with the others as SubIFDs; ``mpp`` (level 0) in the resolution tags."""
    with tifffile.TiffWriter(path) as writer:
        for index, image in enumerate(levels):
            level_mpp = None if mpp is None else mpp * levels[0].shape[1] / image.shape[1]
            writer.write(
                image,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 90},
                resolution=None if level_mpp is None else (1e4 / level_mpp, 1e4 / level_mpp),
                resolutionunit=None if level_mpp is None else "CENTIMETER",
                subifds=len(levels) - 1 if index == 0 else None,
                subfiletype=1 if index else 0,
                metadata=None,
            )
    return path


@pytest.fixture(scope="session")
def cmu_pixels(cmu_svs: Path) -> np.ndarray:
    """Level 0 of the CMU slide (2967 x 2220 RGB), read with tiffslide."""
    with tiffslide.TiffSlide(cmu_svs) as slide:
        return slide.read_region((0, 0), 0, slide.dimensions, as_array=True)


@pytest.fixture(scope="session")
def mosaic_pyramid(cmu_pixels: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-level JPEG pyramid at 0.5 um/px: 2 x 2 mirrored copies of CMU (4440 x 5934) and its 2x reduction.

    Twice the side of CMU (four times its tiles, well over the k-means threshold of 100) with a second level
    at downsample exactly 2; the pixel size is in the TIFF resolution tags (no vendor metadata).
    """
    strip = np.concatenate([cmu_pixels, cmu_pixels[:, ::-1]], axis=1)
    image = np.concatenate([strip, strip[::-1]], axis=0)
    reduced = np.asarray(Image.fromarray(image).reduce(2))
    return write_jpeg_pyramid(tmp_path_factory.mktemp("slides") / "cmu-mosaic.tif", [image, reduced], 0.5)


@pytest.fixture(scope="session")
def no_mpp_tiff(cmu_pixels: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-level JPEG TIFF cut from CMU's tissue (1024 x 1024) that records no pixel size at all."""
    crop = np.ascontiguousarray(cmu_pixels[1024:2048, 512:1536])
    return write_jpeg_pyramid(tmp_path_factory.mktemp("slides") / "no-mpp.tif", [crop], None)


# -- cohort, bundle, CLI ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gse7390_table() -> pd.DataFrame:
    """GSE7390 (scikit-survival's ``load_breast_cancer``) as one gene-level table, built once.

    Columns: the wang76 genes (mean of each gene's probes, computed here with pandas, not with
    ``collapse_probes``), ``time_days``, ``dmfs_event`` (0/1), ``age``, ``size``, ``grade`` (text) and
    ``er`` (text). Shared by the whole session: copy it before changing it.
    """
    from sksurv.datasets import load_breast_cancer

    from sequoia_clinic.signatures.registry import get_signature

    x, y = load_breast_cancer()
    signature = get_signature("wang76")
    table = pd.DataFrame({g: x[[f"X{p}" for p in signature.probes[g]]].mean(axis=1) for g in signature.genes})
    table["time_days"] = y["t.tdm"]
    table["dmfs_event"] = y["e.tdm"].astype(int)
    table["age"] = x["age"].to_numpy()
    table["size"] = x["size"].to_numpy()
    table["grade"] = x["grade"].astype(str).to_numpy()
    table["er"] = x["er"].astype(str).to_numpy()
    return table


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``SEQUOIA_CLINIC_CACHE`` (feature cache, generated demo weights) is a session folder, never ~/.cache."""
    cache = tmp_path_factory.mktemp("user-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEQUOIA_CLINIC_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def demo_bundle(user_cache: Path):
    """The shipped demo bundle ``sequoia-brca-demo`` (weights generated into the session's cache)."""
    from sequoia_clinic.bundles.store import load_bundle
    from sequoia_clinic.settings import ModelSettings, Settings

    settings = Settings(models=ModelSettings(weights_cache_dir=weights_cache_dir(user_cache)))
    return load_bundle("sequoia-brca-demo", settings)


@dataclass(frozen=True)
class Cli:
    """``sequoia-clinic`` run in-process through Typer's CliRunner; ``result.stderr`` is kept apart."""

    runner: CliRunner

    def __call__(self, args: Sequence[str | Path]) -> Result:
        from sequoia_clinic.cli.main import app

        return self.runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture(scope="session")
def cli() -> Cli:
    return Cli(CliRunner())
