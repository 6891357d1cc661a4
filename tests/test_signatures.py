"""Signature registry, gene mapping to the SEQUOIA list, user CSV signatures and the research formulas."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from sequoia_clinic.errors import SignatureError, TableError
from sequoia_clinic.signatures import (
    collapse_probes,
    get_signature,
    list_signatures,
    load_signature_file,
    score_signature,
)
from sequoia_clinic.signatures.mapping import DATA_DIR


@pytest.fixture(scope="module")
def sequoia_symbols(gene_list_csv: Path) -> set[str]:
    """The SEQUOIA gene list read independently from the shared data (not the package copy)."""
    return set(pd.read_csv(gene_list_csv)["gene"])


def test_registry_has_the_required_signatures() -> None:
    assert {"wang76", "oncotype21", "endopredict", "ggi", "pam50"} <= set(list_signatures())


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


def test_oncotype21_genes_and_formula() -> None:
    signature = get_signature("oncotype21")
    assert (
        len(signature.genes) == 21
        and "CTSV" in signature.genes
        and dict(signature.renamed) == {"CTSL2": "CTSV"}
    )
    assert signature.groups.count("reference") == 5
    flat = {g: 8.0 for g in signature.genes}
    # by hand: every group score is 8, RSU = 8 x (0.47 - 0.34 + 1.04 + 0.10 + 0.05 - 0.08 - 0.07) = 9.36
    result = score_signature(signature, flat)
    assert result.value == pytest.approx(20 * (9.36 - 6.7))
    assert result.label == "high"
    low = dict(
        flat, MKI67=2.0, AURKA=2.0, BIRC5=2.0, CCNB1=2.0, MYBL2=2.0, GRB7=1.0, ERBB2=1.0, ESR1=14.0, PGR=14.0
    )
    out = score_signature(signature, low)
    assert out.components["proliferation_group"] == 6.5 and out.components["her2_group"] == 8.0
    er = (0.8 * 14 + 1.2 * 14 + 8 + 8) / 4
    rsu = 0.47 * 8 - 0.34 * er + 1.04 * 6.5 + 0.10 * 8 + 0.05 * 8 - 0.08 * 8 - 0.07 * 8
    assert out.value == pytest.approx(min(max(20 * (rsu - 6.7), 0), 100))
    with pytest.raises(SignatureError, match="missing"):
        score_signature(signature, {"MKI67": 1.0})


def test_endopredict_formula_against_genefu_steps() -> None:
    signature = get_signature("endopredict")
    table = pd.read_csv(DATA_DIR / "genefu_sig_endopredict.csv")
    goi = table[table["group"] == "GOI"]
    rng = np.random.default_rng(0)
    values = {
        g: float(v) for g, v in zip(signature.genes, rng.normal(8, 2, len(signature.genes)), strict=True)
    }
    x = np.array([values[g] for g in goi["symbol"]])
    x = x - x.mean() + np.log2(500)
    expected = np.clip(1.5 * (np.dot(goi["weight"], (x - goi["b"]) / goi["a"]) - 2.63) + 18.95, 0, 15)
    assert score_signature(signature, values).value == pytest.approx(expected)


def test_pam50_assigns_a_centroid_to_its_own_subtype() -> None:
    signature = get_signature("pam50")
    assert len(signature.genes) == 48 and set(signature.unmapped) == {"KRT14", "MIA"}
    assert dict(signature.renamed) == {"CDCA1": "NUF2", "KNTC2": "NDC80", "ORC6L": "ORC6"}
    centroids = pd.read_csv(DATA_DIR / "genefu_pam50_centroids.csv").set_index("dim_0")
    for subtype in ("Basal", "LumA", "Her2"):
        expression = {g: float(signature.extra[subtype][i]) for i, g in enumerate(signature.genes)}
        result = score_signature(signature, expression)
        assert result.label == subtype
        kept = centroids.drop(index=["KRT14", "MIA"])
        rho = spearmanr(kept[subtype].to_numpy(), kept["LumB"].to_numpy()).statistic
        assert result.components["LumB"] == pytest.approx(rho)


def test_ggi_signs_follow_grade(signatures_dir: Path) -> None:
    signature = get_signature("ggi")
    source = pd.read_csv(signatures_dir / "genefu_sig_ggi.csv").dropna(subset=["NCBI.gene.symbol"])
    grade1 = set(source.loc[source["grade"] == 1, "NCBI.gene.symbol"])
    down = {g for g, w in zip(signature.genes, signature.weights, strict=True) if w < 0}
    assert len(down) == len(grade1) == 16
    values = {g: 1.0 for g in signature.genes}
    assert score_signature(signature, values).value == pytest.approx(
        (len(signature.genes) - 32) / len(signature.genes)
    )


def test_user_signature_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("gene,weight\nESR1,-1.5\nCTSL2,0.5\nNOT_A_GENE,2\nmki67,1\n")
    signature = get_signature(str(path))
    assert signature.genes == ("ESR1", "CTSV", "MKI67")
    assert signature.weights == (-1.5, 0.5, 1.0)
    assert signature.unmapped == ("NOT_A_GENE",)
    assert ("CTSL2", "CTSV") in signature.renamed
    assert score_signature(signature, {"ESR1": 2.0, "CTSV": 4.0, "MKI67": 3.0}).value == pytest.approx(
        -3 + 2 + 3
    )
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
