"""The one-page model card of a risk model: a figure (PNG + PDF) and a Markdown document.

:func:`write_model_and_card` writes a risk model's JSON and, beside it, its card (``<stem>.card.png``,
``.card.pdf``, ``.card.md``), each file atomically.

Everything is drawn from the model file itself (no patient data): the key items (outcome, cohort, full
model, how cut-offs were chosen, cross-validated performance with CIs), the calibration plot and the
cross-validated Kaplan-Meier curves by risk group, and (Markdown) the out-of-fold C per declared
subgroup level (``calibrate --subgroup``); the PDF's second page and the Markdown's last section
list the TRIPOD+AI items by number (survival/tripod.py), those the tool cannot know marked "to be
supplied by the user".
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from sequoia_clinic.fileio import atomic_path
from sequoia_clinic.survival.model import SCORE_DEFINITION, RiskModel
from sequoia_clinic.survival.plots import (
    draw_calibration,
    draw_km,
    draw_lp_distribution,
    new_figure,
    plt,
    render_figure,
)
from sequoia_clinic.survival.records import jsonable
from sequoia_clinic.survival.tripod import tripod_items, tripod_markdown

METRIC_LABELS = {
    "harrell_c": "Harrell's C",
    "uno_c": "Uno's C",
    "auc_3y": "td-AUC 3 y",
    "auc_5y": "td-AUC 5 y",
    "auc_10y": "td-AUC 10 y",
    "ibs": "Integrated Brier score",
    "ibs_null_km": "IBS, KM null model",
    "calibration_slope_5y": "Calibration slope 5 y",
    "calibration_slope_10y": "Calibration slope 10 y",
    "calibration_in_the_large_5y": "Calibration-in-the-large 5 y",
    "calibration_in_the_large_10y": "Calibration-in-the-large 10 y",
}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def metric_rows(model: RiskModel) -> list[tuple[str, str, str, str]]:
    """(label, mean, 95% CI, spread over repeats) for the headline metrics present in the model."""
    rows = []
    for key, label in METRIC_LABELS.items():
        m = model.performance.metric(key)
        if m is None:
            continue
        rows.append(
            (
                label,
                _fmt(m.mean),
                f"{_fmt(m.ci_lower)}-{_fmt(m.ci_upper)}",
                f"{_fmt(m.min_over_repeats)}-{_fmt(m.max_over_repeats)}",
            )
        )
    return rows


def _summary_lines(model: RiskModel) -> list[str]:
    training, design = model.training, model.performance.design
    penalty, ph = model.penalty, model.ph_check
    return [
        f"Endpoint: {model.endpoint}.  Cohort: {model.cohort}.",
        f"n = {training.n}, events = {training.events}, median follow-up "
        f"{_fmt(training.median_follow_up_years, 1)} y (reverse KM).",
        f"Predictors: {len(model.genes)} genes of '{model.signature}'"
        + (f" + covariates {', '.join(model.covariates)}" if model.covariates else "")
        + f"; {penalty.nonzero_coefficients} non-zero coefficients.",
        f"Model: {penalty.method}, alpha {_fmt(penalty.alpha, 4)}, l1_ratio {penalty.l1_ratio}.",
        f"Baseline survival S0(5 y) = {_fmt(model.baseline_survival_at(5.0))}, "
        f"S0(10 y) = {_fmt(model.baseline_survival_at(10.0))} (average patient).",
        f"Risk groups: {', '.join(model.group_names)}; cut-offs {model.groups.description}.",
        f"CV: {design.outer_folds}-fold x {design.repeats} repeats (penalty re-chosen per fold), "
        f"{design.n_bootstrap} bootstrap resamples for CIs.",
        f"PH check of the score: p = {_fmt(ph.p_value)} ({ph.interpretation}).",
    ]


def card_figure(model: RiskModel) -> dict[str, bytes]:
    """The one-page card as PNG and PDF bytes."""
    return render_figure(card_page(model), dpi=120)


def card_page(model: RiskModel) -> Figure:
    """The one-page card figure."""
    fig = new_figure(8.27, 11.69)
    endpoint = model.endpoint
    fig.text(
        0.05,
        0.975,
        f"Risk model card: {model.signature} ({model.cohort})",
        fontsize=13,
        weight="bold",
        va="top",
    )
    y = 0.95
    for line in _summary_lines(model):
        fig.text(0.05, y, line, fontsize=7.5, va="top")
        y -= 0.016
    table_ax = fig.add_axes((0.05, 0.6, 0.9, 0.185))
    table_ax.axis("off")
    rows = metric_rows(model)
    if rows:
        table = table_ax.table(
            cellText=[list(r) for r in rows],
            colLabels=["metric", "mean over CV repeats", "bootstrap 95% CI", "range over repeats"],
            colWidths=[0.34, 0.22, 0.22, 0.22],
            cellLoc="center",
            bbox=Bbox.from_bounds(0.0, 0.0, 1.0, 0.9),
        )
        table.auto_set_font_size(False)
        table.set_fontsize(7)
    table_ax.text(
        0.0,
        1.0,
        "Cross-validated performance",
        fontsize=9,
        weight="bold",
        va="top",
        transform=table_ax.transAxes,
    )
    if model.calibration_plot:
        draw_calibration(fig.add_axes((0.1, 0.34, 0.36, 0.2)), model.calibration_plot, endpoint)
    km = model.cross_validated_km
    if km.groups:
        ax = fig.add_axes((0.6, 0.34, 0.36, 0.2))
        title = "Cross-validated KM by risk group" + (
            f"\n(log-rank p={km.logrank.p_value:.2g})" if km.logrank else ""
        )
        draw_km(ax, km.groups, endpoint, title=title)
    draw_lp_distribution(
        fig.add_axes((0.1, 0.05, 0.36, 0.15)), model.training_lp, model.cutoffs, model.group_names
    )
    notes = [*model.notes, SCORE_DEFINITION]
    text_y = 0.235
    fig.text(0.53, text_y, "Notes and limitations", fontsize=8, weight="bold", va="top")
    text_y -= 0.014
    # shrink the notes (wider lines, smaller type) until they fit above the page's bottom margin
    scale, width = 1.0, 72
    while True:
        wrapped_notes = [_wrap(note, width) for note in notes]
        needed = sum(scale * 0.0098 * (w.count("\n") + 1) + 0.004 for w in wrapped_notes)
        if needed <= text_y - 0.01 or scale < 0.6:
            break
        scale, width = scale * 0.92, int(width / 0.92)
    for wrapped in wrapped_notes:
        fig.text(0.53, text_y, wrapped, fontsize=6.3 * scale, va="top", linespacing=1.15)
        text_y -= scale * 0.0098 * (wrapped.count("\n") + 1) + 0.004
    return fig


def tripod_figure(model: RiskModel) -> Figure:
    """The card's second page: the TRIPOD+AI items, numbered."""
    fig = new_figure(8.27, 11.69)
    fig.text(0.05, 0.975, "TRIPOD+AI items (Collins et al., BMJ 2024)", fontsize=12, weight="bold", va="top")
    y = 0.945
    for item in tripod_items(model):
        wrapped = _wrap(item.text, 95)
        fig.text(0.05, y, item.number, fontsize=7, weight="bold", va="top")
        fig.text(0.13, y, item.topic, fontsize=7, weight="bold", va="top")
        fig.text(
            0.13,
            y - 0.012,
            wrapped,
            fontsize=6.5,
            va="top",
            linespacing=1.15,
            color="0.45" if not item.supplied else "black",
        )
        y -= 0.012 + 0.0102 * (wrapped.count("\n") + 1) + 0.008
    return fig


def card_pdf(model: RiskModel) -> bytes:
    """The card as a two-page PDF: the one-page figure, then the TRIPOD+AI items (reproducible bytes)."""
    from matplotlib.backends.backend_pdf import PdfPages

    buffer = io.BytesIO()
    with PdfPages(buffer, metadata={"CreationDate": None}) as pdf:
        for fig in (card_page(model), tripod_figure(model)):
            pdf.savefig(fig, dpi=120)
            plt.close(fig)
    return buffer.getvalue()


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _subgroup_markdown(model: RiskModel) -> list[str]:
    """Out-of-fold Harrell's C per declared subgroup level (calibrate --subgroup); none: no lines."""
    if not model.subgroup_performance:
        return []
    lines = [
        "",
        "## Performance in subgroups (TRIPOD+AI item 14)",
        "",
        "Harrell's C of the out-of-fold linear predictor (first CV repeat) within each level, "
        "bootstrap 95% CI over the level's patients.",
        "",
        "| subgroup | level | n | events | Harrell's C (95% CI) | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in model.subgroup_performance:
        c = (
            "n/a"
            if row.harrell_c is None
            else f"{_fmt(row.harrell_c)} ({_fmt(row.ci_lower)}-{_fmt(row.ci_upper)})"
        )
        lines.append(f"| {row.subgroup} | {row.level} | {row.n} | {row.events} | {c} | {row.note or ''} |")
    return lines


def card_markdown(model: RiskModel, figure_name: str | None = None) -> str:
    """The card as Markdown: summary, performance table, cut-offs, KM table, predictors."""
    lines = [f"# Risk model card: {model.signature}", ""]
    if figure_name:
        lines += [f"![model card]({figure_name})", ""]
    lines += [f"- {line}" for line in _summary_lines(model)]
    lines += [
        "",
        "## Cross-validated performance",
        "",
        "| metric | mean | bootstrap 95% CI | range over repeats |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in metric_rows(model)]
    km = model.cross_validated_km
    if km.groups:
        lines += [
            "",
            "## Cross-validated risk groups",
            "",
            km.description,
            "",
            "| group | n | events | KM 5 y (95% CI) | KM 10 y (95% CI) |",
            "|---|---|---|---|---|",
        ]
        for g in km.groups:
            cells = []
            for years in (5.0, 10.0):
                point = g.at(years)
                cells.append(
                    "n/a"
                    if point is None
                    else f"{_fmt(point.survival)} ({_fmt(point.lower)}-{_fmt(point.upper)})"
                )
            lines.append(f"| {g.label} | {g.n} | {g.events} | {cells[0]} | {cells[1]} |")
        if km.logrank:
            lines.append(f"\nLog-rank p = {km.logrank.p_value:.3g} ({km.logrank.degrees_of_freedom} df).")
        for hr in km.hazard_ratios_vs_lowest:
            lines.append(
                f"HR {hr.group} vs {hr.reference}: "
                f"{_fmt(hr.hazard_ratio, 2)} ({_fmt(hr.lower, 2)}-{_fmt(hr.upper, 2)})."
            )
    lines += _subgroup_markdown(model)
    lines += [
        "",
        "## Model",
        "",
        f"Cut-offs on the linear predictor: {', '.join(f'{c:.4f}' for c in model.cutoffs)}.",
        f"Score: {SCORE_DEFINITION}.",
        "",
        "| predictor | mean | SD | beta per SD | HR per SD (bootstrap 95% CI) | univariable HR (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for row in model.predictor_table:
        ci, uci = row.hr_per_sd_bootstrap_ci, row.univariable_ci
        lines.append(
            f"| {row.name} | {row.mean:.3f} | {row.sd:.3f} | {row.coefficient_per_sd:.4f} | "
            f"{_fmt(row.hr_per_sd)} ({_fmt(ci[0])}-{_fmt(ci[1])}) | "
            f"{_fmt(row.univariable_hr_per_sd, 2)} ({_fmt(uci[0], 2)}-{_fmt(uci[1], 2)}) |"
        )
    if model.notes:
        lines += ["", "## Notes and limitations", ""] + [f"- {n}" for n in model.notes]
    lines += ["", *tripod_markdown(model)]
    signature = model.signature_details
    lines += [
        "",
        "## Signature",
        "",
        signature.citation,
        "",
        f"Unmapped genes/probes: {', '.join(signature.unmapped) or 'none'}.",
    ]
    return "\n".join(lines) + "\n"


def card_paths(out: Path) -> dict[str, Path]:
    """The card files beside a model file ``out``: ``<stem>.card.png``, ``.card.pdf``, ``.card.md``."""
    stem = out.with_suffix("")
    return {fmt: stem.with_name(f"{stem.name}.card.{fmt}") for fmt in ("png", "pdf", "md")}


def write_model_and_card(model: RiskModel, out: Path, card: bool = True) -> list[Path]:
    """Render everything in memory, then write each file atomically (all or nothing on error)."""
    payload = (json.dumps(jsonable(model.to_dict()), indent=2, allow_nan=False) + "\n").encode()
    files: dict[Path, bytes] = {out: payload}
    if card:
        paths = card_paths(out)
        figure = card_figure(model)
        files[paths["png"]] = figure["png"]
        files[paths["pdf"]] = card_pdf(model)
        files[paths["md"]] = card_markdown(model, paths["png"].name).encode()
    with contextlib.ExitStack() as stack:
        for target, data in files.items():
            stack.enter_context(atomic_path(target)).write_bytes(data)
    return list(files)
