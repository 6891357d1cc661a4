"""Report records and shared content: boundary validation, gene selection, sentences, templates."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from example_report import example_report_data

from sequoia_clinic.errors import ReportError
from sequoia_clinic.qc import QCCode, QCWarning
from sequoia_clinic.report import content
from sequoia_clinic.report.model import AbsoluteRisk, GeneRow, SignatureResult, make_report_id
from sequoia_clinic.report.templates import default_templates_dir, load_report_text


@pytest.fixture(scope="module")
def text():
    return load_report_text()


def test_inconsistent_inputs_are_refused() -> None:
    data = example_report_data(seed=0)
    with pytest.raises(ReportError, match="cut-offs"):
        dataclasses.replace(data, cohort=dataclasses.replace(data.cohort, cutoffs=(50.0,)))
    with pytest.raises(ReportError, match="group index"):
        dataclasses.replace(data.risk, group_index=3)
    with pytest.raises(ReportError, match="inside its CI"):
        AbsoluteRisk(5.0, 0.3, 0.1, 0.2)
    with pytest.raises(ReportError, match="score"):
        dataclasses.replace(data.risk, score=101.0)
    short = dataclasses.replace(data.images.heatmaps[0], values=data.images.heatmaps[0].values[:-1])
    with pytest.raises(ReportError, match="one value per tile"):
        dataclasses.replace(data.images, heatmaps=(short,))


def test_report_id_is_stable_and_opaque() -> None:
    a = make_report_id("a" * 64, "b" * 64)
    assert a == make_report_id("a" * 64, "b" * 64) and a != make_report_id("a" * 64, "c" * 64)
    assert a.startswith("SQ-") and len(a) == 15


def test_gene_selection_keeps_largest_contributions_sorted_by_z() -> None:
    genes = tuple(
        GeneRow(f"G{i}", 5.0, z, 50.0, hr)
        for i, (z, hr) in enumerate([(2.0, 1.1), (-1.0, 0.5), (0.5, 3.0), (-3.0, 1.01), (1.0, 1.0001)])
    )
    rows, truncated = content.gene_rows_for_pdf(SignatureResult("s", "u", genes), limit=3)
    # |z * ln HR|: G0 0.19, G1 0.69, G2 0.55, G3 0.03, G4 0.0001 -> keep G1, G2, G0; show by z descending
    assert truncated and [r.gene for r in rows] == ["G0", "G2", "G1"]
    assert content.contribution(genes[1]) == pytest.approx(-1.0 * math.log(0.5))
    rows, truncated = content.gene_rows_for_pdf(SignatureResult("s", "u", genes), limit=10)
    assert not truncated and [r.gene for r in rows] == ["G0", "G4", "G2", "G1", "G3"]


def test_plain_sentence_and_formatting(text) -> None:
    data = example_report_data(seed=0)
    sentence = content.plain_sentence(data, text)
    assert f"{data.risk.group.lower()} risk group (score {data.risk.score:.0f} of 100)" in sentence
    assert "about 26 in 100" in sentence and "(95% CI 18 to 35 in 100)" in sentence and "10 years" in sentence
    assert (
        content.percent(0.1234) == "12%" and content.percent(0.004) == "0.4%" and content.percent(None) == "–"
    )


def test_warnings_are_merged_without_repeats(text) -> None:
    data = example_report_data(seed=0)
    few = QCWarning(QCCode.FEW_TILES, "Few tiles.")
    data = dataclasses.replace(data, qc=dataclasses.replace(data.qc, warnings=(few, few)))
    warnings = content.all_warnings(data, text)
    assert warnings[0] == few and warnings.count(few) == 1
    codes = [w.code for w in warnings]
    assert QCCode.UNTRAINED_BUNDLE in codes and any("untrained" in w.message for w in warnings)
    assert QCCode.INPUTS_OUT_OF_RANGE in codes and any("AURKA" in w.message for w in warnings)


def test_group_colours_span_low_to_high(text) -> None:
    assert text.group_color(0, 2) == text.group_colors[0]
    assert text.group_color(1, 2) == text.group_colors[-1]
    assert [text.group_color(i, 3) for i in range(3)] == list(text.group_colors[:3])


def test_template_errors_name_the_file(tmp_path: Path) -> None:
    source = (default_templates_dir() / "report.toml").read_text(encoding="utf-8")
    (tmp_path / "report.toml").write_text(source.replace("{group} risk group", "{grop} risk group", 1))
    broken = load_report_text(tmp_path)
    with pytest.raises(ReportError, match=r"report\.toml.*\[sentences\]\.default"):
        content.plain_sentence(example_report_data(seed=0), broken)
    (tmp_path / "report.toml").write_text(source.replace("[captions]", "[captionz]"))
    with pytest.raises(ReportError, match=r"\[captions\] is missing"):
        load_report_text(tmp_path)


def test_lp_cutoffs_for_the_distribution_plot() -> None:
    cohort = example_report_data(seed=0).cohort
    evenly = dataclasses.replace(
        cohort, linear_predictors=tuple(float(v) for v in range(101)), cutoffs=(25.0, 50.0)
    )
    assert evenly.cutoffs_on_linear_predictor() == (25.0, 50.0)  # percentiles of 0..100 are the values
    given = dataclasses.replace(evenly, lp_cutoffs=(-0.3, 0.4))
    assert given.cutoffs_on_linear_predictor() == (-0.3, 0.4)
    with pytest.raises(ReportError, match="one LP cut-off per score cut-off"):
        dataclasses.replace(evenly, lp_cutoffs=(0.1,))
