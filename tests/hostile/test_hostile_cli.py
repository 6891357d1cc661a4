"""Every hostile input of the corpus gets the promise: exit 2, one ``error:`` line, nothing left behind.

Cases run in-process (Typer's runner, stderr kept apart). The heavy ones (resource bombs) and a corrupt
slide also run as real processes under ``@pytest.mark.slow``: there the whole stderr (including what
libraries print at interpreter exit) is checked, and the peak RSS must stay under 1.5 GB.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hostile_corpus import ALL_CASES, Case

RSS_LIMIT_KB = 1_500_000  # 1.5 GB
TIME_LIMIT_S = 120


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _check_one_line(stdout: str, stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[:2000]
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[:2000]
    assert stdout == "", stdout[:2000]
    return lines[0]


def test_the_corpus_has_at_least_60_cases_with_unique_names():
    names = [case.name for case in ALL_CASES]
    assert len(names) >= 60 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.name)
def test_hostile_input_is_one_error_line_and_exit_2(cli, case: Case, tmp_path: Path):
    args = case.make(tmp_path)
    before = _snapshot(tmp_path)
    result = cli(args)
    assert result.exit_code == 2, (result.exit_code, result.stderr[:2000])
    _check_one_line(result.stdout, result.stderr)
    assert _snapshot(tmp_path) == before  # nothing written, no partial output or temporary file left


_CHILD = """
import atexit, sys
PEAK_FILE = sys.argv.pop(1)
def _peak():  # VmHWM: this process's own high-water mark (ru_maxrss would include the parent's at exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(PEAK_FILE, "w").write(line.split()[1])
atexit.register(_peak)
from sequoia_clinic.cli.main import app
sys.argv[0] = "sequoia-clinic"
app()
"""


def _run_process(args: list[str], cwd: Path) -> tuple[int, str, str, int]:
    """Run the CLI as a real process: (exit code, stdout, stderr, peak RSS in kB of that process)."""
    peak = cwd.parent / f"{cwd.name}.peak"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(peak), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr, int(peak.read_text())


HEAVY = [case for case in ALL_CASES if case.heavy]
PROCESS = HEAVY + [case for case in ALL_CASES if case.name in {"corrupt-jpeg-tiles", "model-deep-arrays"}]


@pytest.mark.slow
@pytest.mark.parametrize("case", PROCESS, ids=lambda case: case.name)
def test_hostile_input_as_a_real_process_stays_quiet_and_bounded(case: Case, tmp_path: Path):
    args = case.make(tmp_path)
    before = _snapshot(tmp_path)
    code, stdout, stderr, peak_kb = _run_process(args, tmp_path)
    assert code == 2, stderr[:2000]
    line = _check_one_line(stdout, stderr)
    assert "no such command" not in line.lower()  # the case itself was run
    assert _snapshot(tmp_path) == before
    assert peak_kb > 10_000  # the measure works (a Python process alone is larger)
    if case.heavy:
        assert peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb / 1e6:.2f} GB"
