"""Signature registry, gene mapping to the SEQUOIA list and user CSV signatures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sequoia_clinic.errors import SignatureError, TableError
from sequoia_clinic.signatures.mapping import DATA_DIR
from sequoia_clinic.signatures.probes import collapse_probes
from sequoia_clinic.signatures.registry import get_signature, load_signature_file


@pytest.fixture(scope="module")
def sequoia_symbols(gene_list_csv: Path) -> set[str]:
    """The SEQUOIA gene list read straight from its CSV (../shared's, or the sha256-checked package copy)."""
    return set(pd.read_csv(gene_list_csv)["gene"])


@pytest.mark.parametrize("name", ["wang76", "oncotype21", "endopredict", "ggi", "pam50", "gene70"])
def test_every_mapped_gene_is_a_sequoia_symbol(name: str, sequoia_symbols: set[str]) -> None:
    signature = get_signature(name)
    assert signature.genes and len(set(signature.genes)) == len(signature.genes)
    assert set(signature.genes) <= sequoia_symbols
    assert not set(signature.unmapped) & sequoia_symbols
    assert signature.citation and signature.description
    if signature.weights is not None:
        assert len(signature.weights) == len(signature.genes)


def test_bundled_tables_are_unchanged_copies_of_genefu(signatures_dir: Path) -> None:
    for path in sorted(DATA_DIR.glob("genefu_*.csv")):
        shared = signatures_dir / path.name
        assert (
            hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(shared.read_bytes()).hexdigest()
        )


def test_wang76_mapping(signatures_dir: Path) -> None:
    signature = get_signature("wang76")
    source = pd.read_csv(signatures_dir / "genefu_sig_gene76.csv")
    no_symbol = source.loc[source["NCBI.gene.symbol"].isna(), "probe"].tolist()
    assert len(no_symbol) == 12
    assert all(any(u.startswith(p) for u in signature.unmapped) for p in no_symbol)
    renamed = dict(signature.renamed)
    assert renamed["GOLPH2"] == "GOLM1" and renamed["ORC3L"] == "ORC3" and renamed["MLF1IP"] == "CENPU"
    assert renamed["HIST1H4H"] == "H4C8"
    assert {"MYH2", "OR12D2", "MGC70863"} <= set(signature.unmapped)
    assert len(signature.genes) == 60 - 3  # 60 distinct symbols, 3 not in the SEQUOIA list
    # a gene's weight is the sum of its probes' coefficients (DUSP4 has two probes)
    dusp4 = source.loc[source["NCBI.gene.symbol"] == "DUSP4", "std.cox.coefficient"].sum()
    assert signature.weights[signature.genes.index("DUSP4")] == pytest.approx(dusp4)
    assert signature.probes["DUSP4"] == ("204015_s_at", "204014_at")
    assert signature.groups.count("ER+") + signature.groups.count("ER-") == len(signature.genes)


def test_oncotype21_genes() -> None:
    signature = get_signature("oncotype21")
    assert (
        len(signature.genes) == 21
        and "CTSV" in signature.genes
        and dict(signature.renamed) == {"CTSL2": "CTSV"}
    )
    assert signature.groups.count("reference") == 5


def test_endopredict_weights_are_the_published_ones(signatures_dir: Path) -> None:
    signature = get_signature("endopredict")
    table = pd.read_csv(signatures_dir / "genefu_sig_endopredict.csv")
    assert signature.genes == tuple(table["symbol"])
    assert signature.weights == pytest.approx(tuple(table["weight"].fillna(0.0)))  # reference genes: 0
    assert signature.groups.count("REFERENCE") == 3


def test_pam50_genes() -> None:
    signature = get_signature("pam50")
    assert len(signature.genes) == 48 and set(signature.unmapped) == {"KRT14", "MIA"}
    assert dict(signature.renamed) == {"CDCA1": "NUF2", "KNTC2": "NDC80", "ORC6L": "ORC6"}


def test_ggi_signs_follow_grade(signatures_dir: Path) -> None:
    signature = get_signature("ggi")
    source = pd.read_csv(signatures_dir / "genefu_sig_ggi.csv").dropna(subset=["NCBI.gene.symbol"])
    grade1 = set(source.loc[source["grade"] == 1, "NCBI.gene.symbol"])
    down = {g for g, w in zip(signature.genes, signature.weights, strict=True) if w < 0}
    assert len(down) == len(grade1) == 16


def test_user_signature_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("gene,weight\nESR1,-1.5\nCTSL2,0.5\nNOT_A_GENE,2\nmki67,1\n")
    signature = get_signature(str(path))
    assert signature.genes == ("ESR1", "CTSV", "MKI67")
    assert signature.weights == (-1.5, 0.5, 1.0)
    assert signature.unmapped == ("NOT_A_GENE",)
    assert ("CTSL2", "CTSV") in signature.renamed
    plain = tmp_path / "plain.csv"
    plain.write_text("gene\nESR1\nPGR\n")
    assert load_signature_file(plain).weights is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("symbol\nESR1\n", "no 'gene' column"),
        ("gene,weight\nESR1,abc\n", "non-numeric weight"),
        ("gene\nESR1\nESR1\n", "more than once"),
        ("gene\nCTSL2\nCTSV\n", "same gene"),
        ("gene\nFOO1\nBAR2\n", "none of the 2 genes"),
    ],
)
def test_bad_user_signature_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SignatureError, match=match):
        get_signature(str(path))


def test_unknown_signature_name_suggests_a_close_one() -> None:
    with pytest.raises(SignatureError, match="did you mean 'wang76'"):
        get_signature("wang67")


def test_collapse_probes_is_the_mean_of_each_genes_probes() -> None:
    signature = get_signature("wang76")
    probes = [p for g in signature.genes for p in signature.probes[g]]
    rng = np.random.default_rng(1)
    table = pd.DataFrame(rng.normal(size=(4, len(probes))), columns=[f"X{p}" for p in probes])
    genes = collapse_probes(table, signature, column_prefix="X")
    assert list(genes.columns) == list(signature.genes)
    np.testing.assert_allclose(genes["DUSP4"], (table["X204015_s_at"] + table["X204014_at"]) / 2)
    with pytest.raises(TableError, match="probe column"):
        collapse_probes(table.drop(columns=["X204014_at"]), signature, column_prefix="X")
