"""The command line's contract: parse errors, user errors and bugs, option choices, and the shared options.

A parse error (bad value, unknown option, missing argument) and a user error are one ``error:`` line on
stderr with exit code 2; a programming error is one "internal error" line with exit code 1 and the
traceback in a file. ``--help`` lists the real choices, read from the Enums and the registries.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sequoia_clinic.cli import options
from sequoia_clinic.cli.options import build_settings, flag_name, parse_formats
from sequoia_clinic.errors import OptionError
from sequoia_clinic.settings import Device, Precision
from sequoia_clinic.units import TimeUnit

REPO = Path(__file__).resolve().parents[1]
CLI_DIR = REPO / "sequoia_clinic" / "cli"
IMPORT = ["models", "import", "--uni-weights", "w.bin", "--sequoia", "fold", "--name", "x", "--dest", "d"]


def one_error_line(result) -> str:
    """The single ``error:`` line of a failed run (nothing on stdout, no usage box, no traceback)."""
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Usage" not in result.stderr and "╭" not in result.stderr and "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["score", "x.svs", "--max-tiles", "0"], "'--max-tiles'"),
        (["predict", "x.svs", "--max-tiles", "many"], "'--max-tiles'"),
        (["score", "x.svs", "--mpp", "abc"], "'--mpp'"),
        (["predict", "x.svs", "--batch-size", "0"], "'--batch-size'"),
        (["predict", "x.svs", "--batch-size", "99999999999999999999"], "less than or equal to 1024"),
        (["inspect", "x.svs", "--mpp", "0"], "'--mpp'"),
        (["score", "x.svs", "--device", "tpu"], "'tpu' is not one of 'cpu', 'cuda'"),
        (["predict", "x.svs", "--precision", "fp16"], "'fp16' is not one of 'auto', 'fp32', 'bf16'"),
        (["score", "x.svs", "--format", "pdf,xml"], "unknown format(s) xml"),
        (["score", "x.svs", "--format", ","], "'--format'"),
        (["score", "x.svs", "--no-such-option"], "--no-such-option"),
        (["score"], "missing argument 'SLIDE'"),
        (["inspect"], "missing argument 'SLIDE'"),
        (["models", "verify"], "missing argument"),
        ([*IMPORT, "--encoder", "nope"], "'nope' is not one of uni, resnet50, demo-vit"),
        ([*IMPORT, "--aggregator", "nope"], "'nope' is not one of vis, he2rna"),
        (["no-such-command"], "no-such-command"),
    ],
)
def test_parse_errors_are_one_line_naming_the_option_and_exit_2(cli, args, named):
    result = cli(args)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert named in line
    assert line.endswith("--help'.")  # the fix: where the allowed values are listed


def test_a_parse_error_as_a_real_process_is_one_line_without_a_usage_box(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sequoia_clinic", "score", "x.svs", "--max-tiles", "0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "error: invalid value for '--max-tiles': Input should be greater than or equal to 1. "
        "See 'sequoia-clinic score --help'.\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_programming_error_is_an_internal_error_with_a_saved_traceback(cli, tmp_path, monkeypatch):
    import sequoia_clinic.pipeline.inspect as inspect_flow

    def broken(*args, **kwargs):
        raise TypeError("an injected bug")

    monkeypatch.setattr(inspect_flow, "inspect_slide", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = cli(["inspect", "x.svs"])
    assert result.exit_code == 1  # never 2: a bug is not the user's error
    line = one_error_line(result)
    match = re.fullmatch(
        r"error: internal error \(TypeError\); this is a bug — traceback saved to (\S+)", line
    )
    assert match, line
    saved = Path(match.group(1))
    assert saved.parent == tmp_path and saved.name.startswith("sequoia-clinic-traceback-")
    text = saved.read_text()
    assert text.startswith("Traceback") and "TypeError: an injected bug" in text and "def broken" not in line


def test_a_library_error_naming_a_parameter_is_shown_with_its_flag(cli, monkeypatch):
    import sequoia_clinic.pipeline.inspect as inspect_flow

    def refuse(*args, **kwargs):
        raise OptionError("the slide records 0.25, far from this value", fix="Drop it.", option="mpp")

    monkeypatch.setattr(inspect_flow, "inspect_slide", refuse)
    result = cli(["inspect", "x.svs", "--mpp", "2"])
    assert result.exit_code == 2
    assert one_error_line(result) == "error: --mpp: the slide records 0.25, far from this value. Drop it."


def test_sequoia_errors_name_the_library_parameter_outside_the_cli():
    error = OptionError("must be at least 1, got 0", option="max_tiles")
    assert str(error) == "max_tiles: must be at least 1, got 0."
    assert error.render("--max-tiles") == "--max-tiles: must be at least 1, got 0."
    assert error.message == "must be at least 1, got 0" and error.option == "max_tiles"
    assert str(OptionError("bad", "a/b.csv", "Fix it")) == "a/b.csv: bad. Fix it."
    assert flag_name("max_tiles") == "--max-tiles" and flag_name("out_dir") == "--out"


def _compact(text: str) -> str:
    return re.sub(r"[\s│]", "", text)  # rich wraps long lines inside its boxes


def test_help_lists_the_real_choices(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # wide enough that rich does not break a list of choices
    from sequoia_clinic.aggregator.registry import AGGREGATORS
    from sequoia_clinic.encoders.registry import ENCODERS
    from sequoia_clinic.report.files import OutputFormat

    for command in (["score"], ["predict"]):
        text = _compact(cli([*command, "--help"]).stdout)
        assert f"<{'|'.join(Device)}>" in text and f"<{'|'.join(Precision)}>" in text
    assert f"[{','.join(OutputFormat)}]" in _compact(cli(["score", "--help"]).stdout)
    text = _compact(cli(["models", "import", "--help"]).stdout)
    assert f"[{'|'.join(ENCODERS)}]" in text and f"[{'|'.join(AGGREGATORS)}]" in text


def test_the_cli_starts_without_torch_pandas_or_matplotlib():
    code = (
        "import sys\n"
        "from sequoia_clinic.cli.main import app\n"
        "for args in (['--help'], ['inspect', '--help']):\n"
        "    try:\n"
        "        app(args, prog_name='sequoia-clinic')\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, done.code\n"
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'sklearn') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(("args", "status"), [(["--help"], 0), (["inspect", "--tile-px", "x"], 2)])
def test_the_program_ends_after_exit_handlers_and_flushed_output(args, status, tmp_path):
    """``run`` skips the interpreter's teardown (os._exit) but not the atexit handlers, the exit status
    or any buffered output: stdout is a file here, so nothing reaches it before the explicit flush."""
    code = (
        "import atexit, sys\n"
        "from sequoia_clinic.cli.main import run\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "print('buffered line')\n"
        f"sys.argv = ['sequoia-clinic', *{args!r}]\n"
        "run()\n"
        "print('not reached')\n"
    )
    out = tmp_path / "out.txt"
    with open(out, "w") as stdout:
        done = subprocess.run(
            [sys.executable, "-c", code], stdout=stdout, stderr=subprocess.PIPE, timeout=120
        )
    text = out.read_text()
    assert done.returncode == status
    assert text.startswith("buffered line") and "atexit ran" in text and "not reached" not in text
    assert done.stderr.decode().count("error:") == (1 if status else 0)


def test_build_settings_resolves_the_cache_folder_once(user_cache, tmp_path):
    default = build_settings()
    assert default.cache_dir == user_cache  # SEQUOIA_CLINIC_CACHE (conftest), read at the CLI boundary only
    assert default.models.weights_cache_dir == user_cache / "weights"
    assert default.device is Device.CPU and default.precision is Precision.AUTO
    assert default.encoder_batch_size is None  # the encoder's own batch (EncoderSpec.batch_size)
    chosen = build_settings(
        device=Device.CUDA, precision=Precision.FP32, cache_dir=tmp_path, max_tiles=7, batch_size=3
    )
    assert chosen.cache_dir == tmp_path and chosen.models.weights_cache_dir == tmp_path / "weights"
    assert (chosen.device, chosen.precision) == ("cuda", "fp32")
    assert chosen.features.max_tiles == 7 and chosen.encoder_batch_size == 3
    off = build_settings(no_cache=True, models_dir=tmp_path, pseudonym_key="k")
    assert off.cache_dir is None and off.models.weights_cache_dir == user_cache / "weights"
    assert off.models.models_dir == tmp_path and off.report.pseudonym_key == "k"
    assert not hasattr(off, "quiet")  # quiet is a display concern of the CLI


def test_option_values_agree_with_the_library():
    from sequoia_clinic.pipeline.predict import DEFAULT_BUNDLE
    from sequoia_clinic.report.files import OutputFormat

    assert options.DEFAULT_BUNDLE == DEFAULT_BUNDLE
    assert parse_formats("dicom,pdf") == (OutputFormat.PDF, OutputFormat.DICOM)  # canonical order
    assert options.FormatList()(" PDF , json ") == "pdf,json"
    assert [unit.per_year for unit in TimeUnit] == [365.25, 12.0, 1.0]
    assert options.positive_number("0.25") == 0.25


def test_no_command_module_imports_another():
    commands = {path.stem for path in CLI_DIR.glob("*_cmd.py")}
    for path in sorted(CLI_DIR.glob("*_cmd.py")):
        imported = {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("sequoia_clinic.cli.")
        }
        assert not imported & (commands - {path.stem}), f"{path.name} imports {sorted(imported & commands)}"
