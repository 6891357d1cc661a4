"""Tables are read with bounded memory: only the needed columns, typed (issue 10, point 1).

A wide table (30,000 junk text columns beside the few a command uses, a few MB, made here in code) is read
by :func:`sequoia_clinic.fileio.read_table_columns`, by ``calibrate``'s cohort reader and by the training
expression reader with a traced peak memory far below pandas reading the same file whole (the ratio is
asserted, not an absolute number). A needed column that is missing is one error naming it; a junk text value
in an unneeded column is ignored, in a needed numeric one refused naming the column and the data row.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequoia_clinic.errors import SequoiaError, TableError
from sequoia_clinic.fileio import ColumnType, read_table_columns, read_table_header, table_format
from sequoia_clinic.signatures.mapping import load_mapper
from sequoia_clinic.signatures.registry import get_signature
from sequoia_clinic.survival.calibrate import CalibrateRequest, read_cohort_table
from sequoia_clinic.survival.stratify import StratifyRequest, stratify_table
from sequoia_clinic.training.expression import Transform, read_expression

JUNK_COLUMNS = 30_000
ROWS = 40
GENES = ("ESR1", "PLK1", "GOLPH2")  # GOLPH2: an old symbol of GOLM1, matched through the alias table
MIN_RATIO = 8.0  # whole-file peak / needed-columns peak


def _cohort(rng: np.random.Generator, rows: int = ROWS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(rows)],
            "time_days": rng.integers(200, 4000, rows).astype(float),
            "event": rng.integers(0, 2, rows),
            **{gene: rng.normal(5.0, 1.0, rows).round(6) for gene in GENES},
            "risk": rng.normal(size=rows).round(6),
        }
    )


def _write_wide(path: Path, frame: pd.DataFrame, junk_columns: int, prefix: str = "") -> None:
    """``frame`` (gene columns get ``prefix``) and ``junk_columns`` columns of distinct text after it."""
    named = frame.rename(columns={g: prefix + g for g in GENES})
    lines = [",".join([*named.columns, *(f"junk{j}" for j in range(junk_columns))])]
    for i, row in enumerate(named.astype(str).itertuples(index=False)):
        lines.append(",".join([*row, *([f"t{i}"] * junk_columns)]))  # text, distinct within a column
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _peak(read: Callable[[], Any]) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        result = read()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, int]:
    """A cohort table with 30,000 junk text columns, and the traced peak of reading it whole."""
    frame = _cohort(np.random.default_rng(10))
    path = tmp_path_factory.mktemp("wide") / "wide.csv"
    _write_wide(path, frame, JUNK_COLUMNS)
    assert 2 << 20 < path.stat().st_size < 16 << 20  # a few MB
    whole_peak, whole = _peak(lambda: pd.read_csv(path))
    assert whole.shape == (ROWS, frame.shape[1] + JUNK_COLUMNS)
    return path, frame, whole_peak


def test_generic_reader_reads_only_the_needed_columns_typed(wide) -> None:
    path, frame, whole_peak = wide
    plan = {"patient_id": ColumnType.TEXT, "time_days": ColumnType.NUMBER, "ESR1": ColumnType.NUMBER}
    peak, got = _peak(lambda: read_table_columns(table_format(path), plan))
    assert list(got.columns) == ["patient_id", "time_days", "ESR1"]
    assert got["time_days"].dtype == np.float64 and got["ESR1"].dtype == np.float64
    assert got["patient_id"].tolist() == frame["patient_id"].tolist()
    np.testing.assert_array_equal(got["time_days"].to_numpy(), frame["time_days"].to_numpy())
    np.testing.assert_allclose(got["ESR1"].to_numpy(), frame["ESR1"].to_numpy(), rtol=0, atol=1e-12)
    assert whole_peak / peak > MIN_RATIO, (whole_peak, peak)
    print(f"peak {peak / 2**20:.1f} MiB vs whole {whole_peak / 2**20:.1f} MiB")


def test_calibrate_reads_only_survival_and_signature_columns(wide, tmp_path: Path) -> None:
    path, frame, whole_peak = wide
    signature = tmp_path / "sig.csv"
    signature.write_text("gene\n" + "\n".join(GENES) + "\n")
    request = CalibrateRequest(path, str(signature), "time_days", "event", "days", tmp_path / "m.json")
    sig = get_signature(str(signature))
    peak, got = _peak(lambda: read_cohort_table(request, sig))
    assert sorted(got.columns) == sorted(["time_days", "event", *GENES])
    assert got["GOLPH2"].dtype == np.float64 and got["event"].dtype == object
    assert got["event"].tolist() == frame["event"].astype(str).tolist()
    assert whole_peak / peak > MIN_RATIO, (whole_peak, peak)
    print(f"peak {peak / 2**20:.1f} MiB vs whole {whole_peak / 2**20:.1f} MiB")


def test_expression_reader_skips_non_gene_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    frame = _cohort(rng).drop(columns=["time_days", "event", "risk"])
    path = tmp_path / "ref.csv"
    _write_wide(path, frame, JUNK_COLUMNS, prefix="rna_")
    whole_peak, _ = _peak(lambda: pd.read_csv(path))
    mapper = load_mapper()  # the alias table is not part of the reading
    peak, table = _peak(lambda: read_expression(path, Transform.NONE, mapper))
    assert table.genes == ("ESR1", "PLK1", "GOLM1") and table.handling.columns == 3
    expected = frame[list(GENES)].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(table.values, expected, rtol=0, atol=1e-12)
    assert whole_peak / peak > MIN_RATIO, (whole_peak, peak)
    print(f"peak {peak / 2**20:.1f} MiB vs whole {whole_peak / 2**20:.1f} MiB")
    only = read_expression(path, Transform.NONE, load_mapper(), genes=("PLK1",))
    assert only.genes == ("PLK1",) and only.handling.columns == 1
    np.testing.assert_allclose(only.values[:, 0], frame["PLK1"].to_numpy(), rtol=0, atol=1e-12)


# ---- missing and junk values ---------------------------------------------------------------------------------
def test_missing_needed_column_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    _cohort(np.random.default_rng(12)).to_csv(path, index=False)
    with pytest.raises(SequoiaError, match="column 'grade' not found") as caught:
        read_table_columns(table_format(path), {"time_days": ColumnType.NUMBER, "grade": ColumnType.TEXT})
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    signature = tmp_path / "sig.csv"
    signature.write_text("gene\nESR1\n")
    request = CalibrateRequest(path, str(signature), "time_day", "event", "days", tmp_path / "m.json")
    with pytest.raises(TableError, match="column 'time_day' not found \\(did you mean 'time_days'\\?\\)"):
        read_cohort_table(request, get_signature(str(signature)))


JUNK = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=0, max_size=12).map(lambda s: "q" + s)


@settings(max_examples=40, deadline=None, database=None)
@given(
    junk=JUNK,
    row=st.integers(0, 11),
    column=st.sampled_from(["patient_id", "time_days", "event", "ESR1", "PLK1", "GOLPH2", "risk", "note"]),
)
def test_junk_text_ignored_unless_in_a_needed_numeric_column(
    tmp_path_factory: pytest.TempPathFactory, junk: str, row: int, column: str
) -> None:
    frame = _cohort(np.random.default_rng(13), rows=12).assign(note="n")
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = junk
    path = tmp_path_factory.mktemp("junk") / "t.csv"
    frame.to_csv(path, index=False)
    plan = {
        "patient_id": ColumnType.TEXT,
        "time_days": ColumnType.NUMBER,
        "event": ColumnType.TEXT,
        "ESR1": ColumnType.NUMBER,
        "PLK1": ColumnType.NUMBER,
    }
    fmt = table_format(path)
    if plan.get(column) is ColumnType.NUMBER:
        with pytest.raises(TableError) as caught:
            read_table_columns(fmt, plan)
        message = str(caught.value)
        assert f"column '{column}' has a non-numeric value in data row {row + 1}" in message
        assert message.startswith(str(path)) and junk not in message  # the value itself is never shown
        return
    got = read_table_columns(fmt, plan)
    assert list(got.columns) == list(plan)
    expected = pd.read_csv(path, dtype=str)  # an independent parse, all text
    assert got["patient_id"].tolist() == expected["patient_id"].tolist()
    assert got["event"].tolist() == expected["event"].tolist()
    for numeric in ("time_days", "ESR1", "PLK1"):
        want = np.array([float(v) for v in expected[numeric]])
        np.testing.assert_array_equal(got[numeric].to_numpy(), want)


def test_junk_in_a_later_chunk_names_its_row(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(120_000, dtype=float), "y": "text"})
    frame["x"] = frame["x"].astype(object)
    frame.loc[100_002, "x"] = "oops"
    path = tmp_path / "long.tsv"
    frame.to_csv(path, index=False, sep="\t")
    with pytest.raises(TableError, match="column 'x' has a non-numeric value in data row 100,003"):
        read_table_columns(table_format(path), {"x": ColumnType.NUMBER})


def test_parquet_reads_only_the_needed_columns(tmp_path: Path) -> None:
    junk = pd.DataFrame({f"junk{j}": [f"j{j}"] * ROWS for j in range(500)})
    frame = pd.concat([_cohort(np.random.default_rng(14)), junk], axis=1)
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, index=False)
    fmt = table_format(path)
    assert len(read_table_header(fmt)) == frame.shape[1]
    got = read_table_columns(fmt, {"patient_id": ColumnType.TEXT, "ESR1": ColumnType.NUMBER})
    assert list(got.columns) == ["patient_id", "ESR1"]
    np.testing.assert_array_equal(got["ESR1"].to_numpy(), frame["ESR1"].to_numpy())
    text = frame.assign(ESR1=frame["ESR1"].astype(str))
    text.loc[5, "ESR1"] = "high"
    pq.write_table(pa.Table.from_pandas(text, preserve_index=False), path)
    with pytest.raises(TableError, match="column 'ESR1' has a non-numeric value in data row 6"):
        read_table_columns(table_format(path), {"ESR1": ColumnType.NUMBER})


def test_expression_junk_in_a_gene_column_is_refused_elsewhere_ignored(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "wsi_file_name": ["S1.svs", "S2.svs", "S3.svs"],
            "patient_id": ["A", "B", "C"],
            "tcga_project": ["=cmd", "x", "y"],
            "notes": ["free text", "more, quoted", "=1+1"],
            "rna_ESR1": [1.0, 2.0, 3.0],
            "rna_PLK1": [0.5, 0.25, 0.125],
        }
    )
    path = tmp_path / "ref.csv"
    frame.to_csv(path, index=False)
    table = read_expression(path, Transform.NONE, load_mapper())
    assert table.genes == ("ESR1", "PLK1")
    np.testing.assert_array_equal(table.values, frame[["rna_ESR1", "rna_PLK1"]].to_numpy())
    frame["rna_PLK1"] = frame["rna_PLK1"].astype(object)
    frame.loc[2, "rna_PLK1"] = "n.d."
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match="column 'rna_PLK1' has a non-numeric value in data row 3"):
        read_expression(path, Transform.NONE, load_mapper())


def test_stratify_reads_only_its_columns(tmp_path: Path) -> None:
    frame = _cohort(np.random.default_rng(15), rows=60).assign(comment="=HYPERLINK(x)", site="north")
    path = tmp_path / "cohort.csv"
    frame.to_csv(path, index=False)
    request = StratifyRequest(path, tmp_path / "out", "time_days", "event", "days", risk_col="risk")
    outcome = stratify_table(request)
    assert outcome.result is not None and (tmp_path / "out").is_dir()
    frame["risk"] = frame["risk"].astype(object)
    frame.loc[7, "risk"] = "high"
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match="column 'risk' has a non-numeric value in data row 8"):
        stratify_table(
            StratifyRequest(path, tmp_path / "out2", "time_days", "event", "days", risk_col="risk")
        )
    assert not (tmp_path / "out2").exists()
    with pytest.raises(TableError, match="risk column 'risky' not found"):
        stratify_table(
            StratifyRequest(path, tmp_path / "out3", "time_days", "event", "days", risk_col="risky")
        )


@settings(max_examples=60, deadline=None, database=None)
@given(raw=st.binary(max_size=400) | st.text(alphabet='ab,;\t"\n\r\x00é1.-', max_size=200).map(str.encode))
def test_arbitrary_bytes_give_a_frame_or_one_table_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "t.csv"
    path.write_bytes(raw)
    fmt = table_format(path)
    try:
        header = read_table_header(fmt)
        plan = {name: ColumnType.NUMBER if i % 2 else ColumnType.TEXT for i, name in enumerate(header[:3])}
        frame = read_table_columns(fmt, plan, header)
    except SequoiaError as exc:
        assert "\n" not in exc.message
        return
    assert list(frame.columns) == [c for c in header if c in plan] and len(frame) > 0
    for name, kind in plan.items():
        if kind is ColumnType.NUMBER:
            assert frame[name].dtype == np.float64
