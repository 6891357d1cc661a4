"""Imports run one way (cli → pipeline → stages → utilities) and no module imports itself back.

Every module of ``sequoia_clinic`` is parsed with ``ast``; every import counts, at module level, inside
functions and under ``if TYPE_CHECKING:``. A module belongs to the group named by its first component
below ``sequoia_clinic`` (``sequoia_clinic.slides.tiling`` → ``slides``; ``sequoia_clinic.fileio`` →
``fileio``; the package's own ``__init__`` → ``__init__``).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = "sequoia_clinic"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# ---- the rules -------------------------------------------------------------------------------------------
# group          layer        may import (besides its own group and every lower layer)
CLI = {"cli", "__main__"}  # everything below
PIPELINE = {"pipeline"}  # stages and utilities, never cli
STAGES: dict[str, set[str]] = {  # utilities, and only the other stages listed here; never pipeline or cli
    "slides": set(),
    "encoders": set(),
    "features": set(),
    "aggregator": set(),
    "bundles": {"encoders", "aggregator"},  # a bundle names and loads an encoder and aggregator folds
    "signatures": set(),
    "survival": {"signatures"},  # a risk model is fitted on a signature's genes
    "report": set(),
    "training": {"aggregator", "signatures"},  # trains the registry's aggregators; maps expression symbols
    "evaluation": set(),
}
UTILITIES = {  # each other only: no stage, pipeline or cli
    "__init__",
    "errors",
    "settings",
    "units",
    "clinical_choices",
    "fileio",
    "locations",
    "weightio",
    "progress",
    "qc",
    "native_memory",
}
LAYER = {group: 3 for group in CLI} | {group: 2 for group in PIPELINE}
LAYER |= {group: 1 for group in STAGES} | {group: 0 for group in UTILITIES}
# -----------------------------------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_modules(module: str, path: Path) -> set[str]:
    """The ``sequoia_clinic`` modules ``module`` imports anywhere in its source (package = its __init__)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from pkg import submodule` imports the submodule; `from pkg import name` imports pkg
            names = [
                f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                while name not in MODULES and "." in name:  # `import a.b.c` of a non-module: its package
                    name = name.rsplit(".", 1)[0]
                found.add(name)
    found.discard(module)
    return found


GRAPH: dict[str, set[str]] = {module: imported_modules(module, path) for module, path in MODULES.items()}


def allowed(source: str, target: str) -> bool:
    if source == target:
        return True
    if LAYER[source] != LAYER[target]:
        return LAYER[source] > LAYER[target]
    if source in STAGES:
        return target in STAGES[source]
    return True  # utilities import each other; cli and __main__ likewise


def test_every_module_has_a_layer() -> None:
    unknown = sorted({group_of(m) for m in MODULES} - LAYER.keys())
    assert not unknown, f"add these groups to the table at the top of this test: {unknown}"
    assert set(STAGES) & UTILITIES == set() and all(edges <= STAGES.keys() for edges in STAGES.values())


def test_imports_run_one_way() -> None:
    violations = [
        f"{source} ({group_of(source)}) imports {target} ({group_of(target)})"
        for source, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if group_of(source) in LAYER
        and group_of(target) in LAYER
        and not allowed(group_of(source), group_of(target))
    ]
    assert not violations, "imports against the layer rules:\n" + "\n".join(violations)


def test_no_import_cycle() -> None:
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
    except graphlib.CycleError as exc:  # args[1]: each module is imported by the next one
        pytest.fail(f"import cycle: {' imports '.join(reversed(exc.args[1]))}")


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The parser finds function-level, TYPE_CHECKING, relative and `from pkg import submodule` imports."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import sequoia_clinic.slides.tiling\n"
        "from . import tile_reader\n"
        "from ..errors import SlideFormatError\n"
        "if TYPE_CHECKING:\n"
        "    from sequoia_clinic.cli.main import app\n"
        "def late():\n"
        "    from sequoia_clinic.pipeline import score\n"
        "    from sequoia_clinic import __version__\n"
    )
    assert imported_modules("sequoia_clinic.slides.probe", source) == {
        "sequoia_clinic",
        "sequoia_clinic.cli.main",
        "sequoia_clinic.errors",
        "sequoia_clinic.pipeline.score",
        "sequoia_clinic.slides.tile_reader",
        "sequoia_clinic.slides.tiling",
    }
    cycle = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(cycle).prepare()
