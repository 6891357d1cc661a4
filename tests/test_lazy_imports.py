"""Heavy libraries are imported only by the stage that needs them (fast start, lean workers; issue #14).

Each command runs in a fresh interpreter (as a user would start it) and reports which of the heavy
third-party packages ended up in ``sys.modules``. The timing itself is measured by ``benches/bench_start.py``;
this test pins the structure that makes it fast, so that an eager import slipped into a shared module shows
up here rather than as a slower start weeks later.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sequoia_clinic.locations import demo_slide

HEAVY = (
    "torch",
    "timm",
    "torchvision",
    "sklearn",
    "sksurv",
    "lifelines",
    "matplotlib",
    "reportlab",
    "wsidicom",
    "pydicom",
    "pandas",
    "pyarrow",
    "scipy",
    "skimage",
    "dask",
    "distributed",
)

_RUNNER = """
import json, sys
from sequoia_clinic.cli.main import app
heavy = json.loads(sys.argv[2])
sys.argv = ["sequoia-clinic", *json.loads(sys.argv[1])]
try:
    app(prog_name="sequoia-clinic")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\n@@" + json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def loaded_by(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    """The heavy packages a fresh interpreter has imported after running ``sequoia-clinic ARGS``."""
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    report = json.loads(done.stdout.rsplit("@@", 1)[1])
    assert report["code"] in (0, None), done.stderr[-2000:]
    return set(report["loaded"])


def _env(cache: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SEQUOIA_CLINIC_CACHE"] = str(cache)
    return env


def test_help_imports_no_heavy_library():
    assert loaded_by(["--help"]) == set()
    assert loaded_by(["score", "--help"]) == set()


def test_inspect_needs_only_the_slide_readers():
    # tiffslide + numpy + Pillow (and skimage.exposure, without scipy): no torch, DICOM stack or pandas
    loaded = loaded_by(["inspect", str(demo_slide())])
    assert loaded <= {"skimage"}, loaded


@pytest.mark.slow
def test_score_json_on_a_cache_hit_loads_torch_but_no_fitting_encoder_or_report_stack(tmp_path):
    env = _env(tmp_path / "cache")
    args = ["score", str(demo_slide()), "--allow-inadequate", "--format", "json"]
    first = loaded_by([*args, "--out", str(tmp_path / "a")], env)  # cold: the encoder runs
    assert "timm" in first and "torch" in first
    warm = loaded_by([*args, "--out", str(tmp_path / "b")], env)  # warm: features from the cache
    assert "torch" in warm  # the aggregator folds run on every score
    assert not warm & {"timm", "torchvision", "sklearn", "sksurv", "lifelines", "wsidicom", "pydicom"}, warm
    assert not warm & {"matplotlib", "reportlab", "pandas", "pyarrow", "dask", "distributed"}, warm
    # the report stack comes in only when a PDF is written
    pdf = loaded_by(["score", str(demo_slide()), "--allow-inadequate", "--out", str(tmp_path / "c")], env)
    assert {"matplotlib", "reportlab"} <= pdf
    assert not pdf & {"timm", "sklearn", "lifelines", "pydicom", "wsidicom"}, pdf
