"""A regular (non-editable) install: the wheel carries the data, and `demo` runs from it offline, read-only.

The package is built as a wheel from a copy of this checkout and installed into a fresh virtual environment
whose dependencies come from the development environment (a ``.pth`` file naming its site-packages), with
pip's ``--no-index``: nothing is downloaded. The demo must succeed from there, find every data file inside
the installed package, and write nothing into it (we run as root, so file modes cannot prove read-only: the
package folder's listing, sizes and mtimes are compared before and after).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from sequoia_clinic.report.schema import validate_result

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "sequoia_clinic", "models", "templates")
DATA_IN_WHEEL = (
    "sequoia_clinic/demo/CMU-1-Small-Region.svs",
    "sequoia_clinic/_templates/report.toml",
    "sequoia_clinic/_models/risk/gse7390-wang76.json",
    "sequoia_clinic/_models/risk/gse7390-wang76.card.md",
    "sequoia_clinic/_models/sequoia-brca-demo/manifest.json",
    "sequoia_clinic/_models/sequoia-brca-demo/genes.csv",
    "sequoia_clinic/schemas/result.schema.json",
    "sequoia_clinic/bundles/manifest.schema.json",
    "sequoia_clinic/signatures/data/registry.json",
    "sequoia_clinic/signatures/data/symbol_aliases.csv",
    "sequoia_clinic/signatures/data/genefu_sig_gene76.csv",
)


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    # An inherited PYTHONPATH (e.g. a checkout put first on the path) would shadow the installed wheel.
    kwargs.setdefault("env", {k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
def test_a_wheel_install_runs_the_demo_offline_and_writes_nothing_into_the_package(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "weights", "*.egg-info", "build")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=junk)
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    _run([*pip, "wheel", "-q", *offline, "-w", str(tmp_path / "dist"), str(source)])
    (wheel,) = (tmp_path / "dist").glob("sequoia_clinic-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in DATA_IN_WHEEL if name not in names] == []
    assert not [n for n in names if "weights/" in n or n.endswith(".safetensors")]  # generated, never shipped

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    )
    dev_site = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "dev-dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(dev_site)))
    _run([*pip, "--python", str(python), "install", "-q", *offline, str(wheel)])

    package = site / "sequoia_clinic"
    probe = (
        "import sequoia_clinic, sequoia_clinic.locations as l; print(sequoia_clinic.__file__, l.models_dir())"
    )
    where = _run([str(python), "-c", probe], cwd=tmp_path).stdout.split()
    assert where == [str(package / "__init__.py"), str(package / "_models")]

    before = _listing(package)
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SEQUOIA_CLINIC_CACHE": str(cache)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a read-only install gets no new .pyc files either
    done = _run(
        [str(venv / "bin" / "sequoia-clinic"), "demo", "--out", str(out), "--quiet"], cwd=tmp_path, env=env
    )
    assert "Demo report:" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["report.dcm", "report.pdf", "result.json"]
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    result = json.loads((out / "result.json").read_text())
    validate_result(result)
    assert _listing(package) == before  # nothing created or changed inside the installed package
    assert len(list((cache / "weights").glob("*/*.safetensors"))) == 3  # the demo weights went to the cache
