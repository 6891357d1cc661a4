"""Property-based tests of the readers of user files: whatever the bytes, a known error or a value.

The JSON reader (:func:`sequoia_clinic.fileio.parse_json_bounded`) and the table reader
(:func:`sequoia_clinic.fileio.read_table_columns`) get arbitrary input from hypothesis; they must either
return a result that agrees with an independent parse, or raise their one documented error type — never
RecursionError, MemoryError or a library exception. CSV cells written by the tool must not start a formula.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sequoia_clinic.errors import RiskModelError, TableError
from sequoia_clinic.fileio import (
    CSV_FORMULA_PREFIXES,
    ColumnType,
    JsonLimitError,
    csv_safe_cell,
    csv_safe_frame,
    json_depth,
    parse_json_bounded,
    read_table_columns,
    read_table_header,
    table_format,
)
from sequoia_clinic.report.dicom_text import TextVR, vr_problem
from sequoia_clinic.survival.model import RiskModel

settings.register_profile("hostile", database=None, deadline=None)  # no example folder written
settings.load_profile("hostile")

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(JSON_VALUES)
def test_json_values_round_trip_and_depth_agrees(value):
    text = json.dumps(value)
    assert json_depth(text) == _depth(value)
    assert parse_json_bounded(text.encode()) == value


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_json_or_one_known_error(raw):
    try:
        parse_json_bounded(raw)
    except JsonLimitError:
        pass


@given(st.integers(min_value=1, max_value=300_000), st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_refused_without_recursion(depth, opener):
    closer = "]" if opener == "[" else "}"
    text = opener * depth + ("1" if opener != "[" else "") + closer * depth
    if depth <= 32:
        assert _depth(parse_json_bounded(text.encode())) == depth
    else:
        try:
            parse_json_bounded(text.encode())
        except JsonLimitError as exc:
            assert "levels deep" in str(exc)
        else:
            raise AssertionError("deep JSON accepted")


@given(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
def test_non_finite_constants_are_refused(constant):
    try:
        parse_json_bounded(f'{{"x": {constant}}}'.encode())
    except JsonLimitError as exc:
        assert constant.lstrip("-") in str(exc)
    else:
        raise AssertionError("non-finite number accepted")


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000))
def test_risk_model_reader_raises_only_its_error(tmp_path: Path, raw: bytes):
    path = tmp_path / "model.json"
    path.write_bytes(raw)
    try:
        RiskModel.load(path)
    except RiskModelError:
        pass


CELLS = st.one_of(st.text(max_size=12), st.floats(allow_nan=False, allow_infinity=False), st.integers())


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(CELLS, min_size=3, max_size=3), min_size=0, max_size=8), st.sampled_from([",", ";"]))
def test_table_reader_gives_the_table_or_one_table_error(tmp_path: Path, rows, separator):
    path = tmp_path / "t.csv"
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=["time", "event", "risk"]).to_csv(buffer, index=False, sep=separator)
    path.write_text(buffer.getvalue())
    try:
        frame = read_table_columns(table_format(path), {"time": ColumnType.INFER, "risk": ColumnType.INFER})
    except TableError:
        return
    independent = pd.read_csv(path, sep=separator)
    if separator == ",":
        assert list(frame.columns) == ["time", "risk"]
        pd.testing.assert_frame_equal(frame, independent[["time", "risk"]], check_dtype=False)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_table_reader_on_arbitrary_bytes_raises_only_table_errors(tmp_path: Path, raw: bytes):
    path = tmp_path / "t.csv"
    path.write_bytes(raw)
    try:
        fmt = table_format(path)
        read_table_columns(fmt, dict.fromkeys(read_table_header(fmt), ColumnType.INFER))
    except TableError:
        pass


@given(st.text(max_size=20))
def test_csv_cells_never_start_a_formula_unless_they_are_numbers(text):
    safe = csv_safe_cell(text)
    if safe.startswith(CSV_FORMULA_PREFIXES):
        float(safe)  # only a number may still start with = + - @ tab or CR (e.g. "-1.5")
    assert safe in (text, "'" + text)


@given(
    st.lists(st.floats(allow_nan=False), min_size=1, max_size=5),
    st.lists(st.text(max_size=8), min_size=1, max_size=5),
)
def test_csv_frames_keep_numbers_numeric(numbers, labels):
    frame = pd.DataFrame({"=x": pd.Series(numbers), "label": pd.Series(labels)})
    safe = csv_safe_frame(frame)
    assert list(safe.columns) == ["'=x", "label"]
    np.testing.assert_array_equal(safe["'=x"].to_numpy(), frame["=x"].to_numpy())
    assert safe["'=x"].dtype == frame["=x"].dtype


@given(st.text(max_size=80), st.sampled_from(list(TextVR)))
def test_dicom_text_rules(text, vr):
    """Independent restatement of PS3.5 for PN/LO/SH in UTF-8: no controls or backslash, lengths."""
    problem = vr_problem(text, vr)
    controls = any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)
    if controls or "\\" in text:
        assert problem is not None
        return
    if vr is TextVR.PN:
        groups = text.split("=")
        valid = len(groups) <= 3 and all(g.count("^") <= 4 and len(g) <= 64 for g in groups)
    else:
        valid = len(text) <= (64 if vr is TextVR.LO else 16)
    assert (problem is None) == valid
