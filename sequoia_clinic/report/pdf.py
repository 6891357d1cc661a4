"""The patient report as an A4 PDF (reportlab platypus, matplotlib figures, prose from templates/).

Page 1 holds the header block, the result and where the patient sits in the calibration cohort; page 2
the gene signature and the slide; page 3 quality control, method/provenance and intended use. A page
template draws the running header, the footer and - for demo runs - the DEMONSTRATION banner on every
page, so no page can miss it. ``invariant=True`` makes two renders of the same data byte-identical.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

import matplotlib
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    Image,
    KeepTogether,
    ListFlowable,
    ListItem,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from sequoia_clinic.fileio import write_bytes_atomic
from sequoia_clinic.report import content, figures
from sequoia_clinic.report.figures import FigureImage
from sequoia_clinic.report.model import GeneRow, ReportData
from sequoia_clinic.report.templates import ReportText, load_report_text
from sequoia_clinic.settings import ReportSettings

FONT = "SQ-Sans"
FONT_BOLD = "SQ-Sans-Bold"
PAGE_W, PAGE_H = A4
MARGIN = 15 * mm
CONTENT_W = PAGE_W - 2 * MARGIN
BANNER_H = 11 * mm
HEADER_H = 11 * mm
FOOTER_H = 11 * mm
CONTENT_W_MM = CONTENT_W / mm


def _register_fonts() -> None:
    """Embed DejaVu Sans (shipped inside matplotlib) so names in any Latin/Greek/Cyrillic script print."""
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdfmetrics.registerFont(TTFont(FONT, str(ttf / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(ttf / "DejaVuSans-Bold.ttf")))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic=FONT, boldItalic=FONT_BOLD)


@dataclass(frozen=True)
class _Styles:
    body: ParagraphStyle
    small: ParagraphStyle
    caption: ParagraphStyle
    title: ParagraphStyle
    subtitle: ParagraphStyle
    section: ParagraphStyle
    label: ParagraphStyle
    value: ParagraphStyle
    sentence: ParagraphStyle
    cell: ParagraphStyle
    cell_bold: ParagraphStyle
    warning: ParagraphStyle


def _styles(text: ReportText) -> _Styles:
    accent = colors.HexColor(text.accent_color)
    base = ParagraphStyle("body", fontName=FONT, fontSize=8.5, leading=11, alignment=TA_LEFT)
    return _Styles(
        body=base,
        small=ParagraphStyle("small", base, fontSize=7.5, leading=9.5),
        caption=ParagraphStyle(
            "caption", base, fontSize=7, leading=8.8, textColor=colors.HexColor("#444444")
        ),
        title=ParagraphStyle("title", base, fontName=FONT_BOLD, fontSize=16, leading=19, textColor=accent),
        subtitle=ParagraphStyle(
            "subtitle", base, fontSize=8.5, leading=11, textColor=colors.HexColor("#444444")
        ),
        section=ParagraphStyle(
            "section",
            base,
            fontName=FONT_BOLD,
            fontSize=10.5,
            leading=13,
            textColor=accent,
            spaceBefore=5,
            spaceAfter=3,
        ),
        label=ParagraphStyle("label", base, fontSize=7, leading=8.5, textColor=colors.HexColor("#555555")),
        value=ParagraphStyle("value", base, fontName=FONT_BOLD, fontSize=9, leading=11),
        sentence=ParagraphStyle("sentence", base, fontSize=9.5, leading=12.5),
        cell=ParagraphStyle("cell", base, fontSize=7.5, leading=9),
        cell_bold=ParagraphStyle("cell_bold", base, fontName=FONT_BOLD, fontSize=7.5, leading=9),
        warning=ParagraphStyle(
            "warning", base, fontSize=8, leading=10.5, textColor=colors.HexColor("#8a4b00")
        ),
    )


def _p(value: object, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(str(value)), style)


# --- page decorations: banner, running header, footer ---------------------------------------------------


@dataclass(frozen=True)
class _PageContext:
    data: ReportData
    text: ReportText
    total_pages: int


def _draw_banner(canvas: Canvas, ctx: _PageContext) -> None:
    text = ctx.text
    canvas.setFillColor(colors.HexColor(text.banner_color))
    canvas.rect(0, PAGE_H - BANNER_H, PAGE_W, BANNER_H, stroke=0, fill=1)
    canvas.setFillColor(colors.white)
    canvas.setFont(FONT_BOLD, 12)
    canvas.drawCentredString(PAGE_W / 2, PAGE_H - 6 * mm, text.banner["demo"])
    canvas.setFont(FONT, 7)
    canvas.drawCentredString(PAGE_W / 2, PAGE_H - 9.4 * mm, text.banner["demo_detail"])
    canvas.saveState()  # faint diagonal watermark behind the content
    canvas.setFillColor(colors.HexColor(text.banner_color), alpha=0.06)
    canvas.translate(PAGE_W / 2, PAGE_H / 2)
    canvas.rotate(50)
    canvas.setFont(FONT_BOLD, 72)
    canvas.drawCentredString(0, -25, text.banner["watermark"])
    canvas.restoreState()


def _patient_line(ctx: _PageContext, max_width: float) -> str:
    """'Name · ID x · Accession y · Report z', the name shortened with an ellipsis if it does not fit."""
    patient, data = ctx.data.patient, ctx.data
    tail = [f"ID {patient.patient_id or '–'}"]
    if patient.accession:
        tail.append(f"Accession {patient.accession}")
    tail.append(f"Report {data.report_id}")
    name = patient.name or "Name not given"
    while True:
        line = " · ".join([name, *tail])
        if pdfmetrics.stringWidth(line, FONT, 7.5) <= max_width or len(name) <= 4:
            return line
        name = name[: max(len(name) - 4, 3)].rstrip() + "…"


def _draw_page(canvas: Canvas, doc: BaseDocTemplate, ctx: _PageContext) -> None:
    text, data = ctx.text, ctx.data
    canvas.saveState()
    if data.demo:
        _draw_banner(canvas, ctx)
    top = PAGE_H - (BANNER_H if data.demo else 0) - 7 * mm
    canvas.setFillColor(colors.HexColor(text.accent_color))
    canvas.setFont(FONT_BOLD, 8.5)
    canvas.drawString(MARGIN, top, text.header["title"])
    canvas.setFillColor(colors.black)
    canvas.setFont(FONT, 7.5)
    room = CONTENT_W - pdfmetrics.stringWidth(text.header["title"], FONT_BOLD, 8.5) - 8 * mm
    canvas.drawRightString(PAGE_W - MARGIN, top, _patient_line(ctx, room))
    canvas.setStrokeColor(colors.HexColor(text.rule_color))
    canvas.setLineWidth(0.5)
    canvas.line(MARGIN, top - 2.5 * mm, PAGE_W - MARGIN, top - 2.5 * mm)
    canvas.line(MARGIN, FOOTER_H, PAGE_W - MARGIN, FOOTER_H)
    canvas.setFont(FONT, 6.5)
    canvas.setFillColor(colors.HexColor("#444444"))
    prov = data.provenance
    canvas.drawString(
        MARGIN,
        FOOTER_H - 4 * mm,
        f"sequoia-clinic {prov.software_version} · bundle {prov.bundle_name} {prov.bundle_version} · "
        f"risk model {prov.risk_model_name} · {text.header['research_use']}",
    )
    canvas.drawRightString(PAGE_W - MARGIN, FOOTER_H - 4 * mm, f"Page {doc.page} of {ctx.total_pages}")
    canvas.restoreState()


# --- page 1: header block, result, where the patient sits ------------------------------------------------


def _patient_block(data: ReportData, text: ReportText, st: _Styles) -> Table:
    p = data.patient
    fields = [
        ("Name", p.name),
        ("Patient ID", p.patient_id),
        ("Birth date", p.birth_date),
        ("Sex", p.sex),
        ("Accession", p.accession),
        ("Specimen", p.specimen),
        ("Scan date", p.scan_date),
        ("Scanner", p.scanner),
        ("Report date", data.report_date),
        ("Report ID", data.report_id),
    ]
    if p.pseudonymised:
        fields[0] = ("Name (pseudonym)", p.name)
    cells = [[_p(label, st.label), _p(value or "–", st.value)] for label, value in fields]
    rows = [cells[i] + cells[i + 1] for i in range(0, len(cells), 2)]
    width = CONTENT_W / 2
    table = Table(rows, colWidths=[24 * mm, width - 24 * mm, 24 * mm, width - 24 * mm])
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#f4f6f8")),
                ("BOX", (0, 0), (-1, -1), 0.5, colors.HexColor(text.rule_color)),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ]
        )
    )
    return table


def _result_block(data: ReportData, text: ReportText, st: _Styles) -> Table:
    risk = data.risk
    color = colors.HexColor(text.group_color(risk.group_index, len(risk.group_names)))
    big = ParagraphStyle(
        "big", st.body, fontName=FONT_BOLD, fontSize=26, leading=30, textColor=color, alignment=TA_CENTER
    )
    centred = ParagraphStyle("centred", st.body, alignment=TA_CENTER)
    group_cell = [
        Paragraph("RISK GROUP", ParagraphStyle("glabel", st.label, alignment=TA_CENTER)),
        Paragraph(escape(risk.group.upper()), big),
        Paragraph(f"Risk score <b>{risk.score:.0f}</b> of 100", centred),
    ]
    unit = data.cohort.time_unit
    risk_rows = [[_p(f"Risk of {text.sentences['endpoint_event']}", st.label), ""]]
    for item in sorted(risk.absolute_risks, key=lambda r: r.horizon):
        ci = (
            ""
            if item.lower is None or item.upper is None
            else (f"95% CI {content.percent(item.lower)}–{content.percent(item.upper)}")
        )
        risk_rows.append(
            [
                _p(f"within {content.horizon_label(item.horizon, unit)}", st.body),
                Paragraph(
                    f"<font size=16><b>{content.percent(item.risk)}</b></font>&nbsp;&nbsp;{escape(ci)}",
                    ParagraphStyle("risk", st.body, leading=19),
                ),
            ]
        )
    style = [
        ("SPAN", (0, 0), (1, 0)),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("LEFTPADDING", (0, 0), (-1, -1), 0),
    ]
    if not risk.absolute_risks:
        risk_rows.append([_p(text.sentences["not_estimable"], st.body), ""])
        style.append(("SPAN", (0, 1), (1, 1)))
    risks = Table(risk_rows, colWidths=[30 * mm, 62 * mm])
    risks.setStyle(TableStyle(style))
    lp = Paragraph(
        f"Linear predictor {risk.linear_predictor:+.3f}<br/>Calibration cohort: {escape(data.cohort.name)}<br/>"
        f"n = {data.cohort.n}, {data.cohort.events} events<br/>Endpoint: {escape(data.cohort.endpoint)}",
        st.small,
    )
    table = Table([[group_cell, risks, lp]], colWidths=[58 * mm, 80 * mm, CONTENT_W - 138 * mm])
    table.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (0, 0), 1.2, color),
                (
                    "BACKGROUND",
                    (0, 0),
                    (0, 0),
                    colors.HexColor(text.group_tint(risk.group_index, len(risk.group_names))),
                ),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("LEFTPADDING", (1, 0), (1, 0), 6 * mm),
                ("TOPPADDING", (0, 0), (0, 0), 4),
                ("BOTTOMPADDING", (0, 0), (0, 0), 6),
            ]
        )
    )
    return table


def _image(fig: FigureImage) -> Image:
    return Image(io.BytesIO(fig.data), width=fig.width_mm * mm, height=fig.height_mm * mm)


def _sentence_box(sentence: str, st: _Styles, text: ReportText) -> Table:
    box = Table([[_p(sentence, st.sentence)]], colWidths=[CONTENT_W])
    box.setStyle(
        TableStyle(
            [
                ("LINEBEFORE", (0, 0), (0, 0), 2.5, colors.HexColor(text.accent_color)),
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#f4f6f8")),
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 4),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    return box


def _side_by_side(left: list[Flowable], right: list[Flowable], left_w: float) -> Table:
    table = Table([[left, right]], colWidths=[left_w, CONTENT_W - left_w])
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    return table


@dataclass(frozen=True)
class _Figures:
    score_bar: FigureImage
    distribution: FigureImage
    km: FigureImage
    genes: FigureImage
    slide: FigureImage | None


_HALF_MM = CONTENT_W_MM / 2 - 2
_GENE_TABLE_MM = 108.0
_GENE_HEADER_MM = 7.0
_GENE_ROW_MM = 4.2


def _render_figures(data: ReportData, text: ReportText, settings: ReportSettings) -> _Figures:
    dpi = settings.figure_dpi
    rows, _ = content.gene_rows_for_pdf(data.signature, settings.max_gene_rows)
    slide = None
    if data.images is not None:
        unit = data.signature.expression_unit
        genes = [(gene, unit) for gene in content.top_heatmap_genes(data, settings.heatmap_genes)]
        slide = figures.slide_panels(
            data.images, data.slide.width_px, data.slide.height_px, data.slide.mpp, genes, CONTENT_W_MM, dpi
        )
    return _Figures(
        score_bar=figures.score_bar(data.risk, data.cohort.cutoffs, text, CONTENT_W_MM, dpi),
        distribution=figures.score_distribution(data.cohort, data.risk, text, _HALF_MM, 80, dpi),
        km=figures.km_curves(data.cohort, data.risk, text, _HALF_MM, 80, dpi),
        genes=figures.gene_bars(rows, CONTENT_W_MM - _GENE_TABLE_MM - 2, _GENE_HEADER_MM, _GENE_ROW_MM, dpi),
        slide=slide,
    )


def _warning_pointer(data: ReportData, text: ReportText, st: _Styles) -> list[Flowable]:
    """One line on page 1 that points to the quality-control warnings, so none goes unseen."""
    count = len(content.all_warnings(data, text))
    if count == 0:
        return []
    return [Spacer(1, 1 * mm), _p("⚠ " + text.fill("warnings", "pointer", count=count), st.warning)]


def _page_one_notes(data: ReportData, text: ReportText, st: _Styles) -> list[Flowable]:
    """Clinical values and the risk's parts, repeatability, and the population / adequacy flags in plain words."""
    out: list[Flowable] = []
    clinical = data.clinical
    if clinical is not None and (clinical.given or clinical.model_covariates or clinical.specimen_type):
        values = " · ".join(f"{label} {value}" for label, value in clinical.given) or "none given"
        specimen = f" · Specimen: {clinical.specimen_type}" if clinical.specimen_type else ""
        parts = f"genomic part {clinical.genomic_lp:+.3f}"
        if clinical.model_covariates:
            parts += f" + clinical part {clinical.clinical_lp:+.3f} ({', '.join(clinical.model_covariates)})"
        out += [
            Spacer(1, 1 * mm),
            Paragraph(f"<b>Clinical values:</b> {escape(values)}{escape(specimen)}", st.small),
            Paragraph(f"<b>Linear predictor</b> = {escape(parts)}", st.small),
        ]
        if clinical.population:
            out.append(
                Paragraph(f"<b>Model population:</b> {escape('; '.join(clinical.population))}", st.small)
            )
    sig = data.signature
    if sig.reliability is not None:
        out.append(
            Paragraph(
                f"<b>Reliably predicted genes:</b> {sig.reliable_count} of the signature's {len(sig.genes)} genes "
                f"({escape(sig.reliability)}).",
                st.small,
            )
        )
    rep = data.repeatability
    if rep is not None:
        out.append(
            Paragraph(
                f"<b>Repeatability</b> ({rep.repeats} repeats, {escape(rep.varied)} varied): score "
                f"{rep.score_low:.0f}–{rep.score_high:.0f}, linear predictor {rep.lp_low:+.3f} to {rep.lp_high:+.3f}; "
                f"group {escape(data.risk.group)} in {rep.same_group} of {rep.repeats} repeats. "
                f"Spread over folds: {rep.fold_lp_low:+.3f} to {rep.fold_lp_high:+.3f}.",
                st.small,
            )
        )
    for warning in content.page_one_warnings(data, text):
        out.append(_p("⚠ " + warning.message, st.warning))
    return out


def _page_one(data: ReportData, text: ReportText, st: _Styles, figs: _Figures) -> list[Flowable]:
    cohort = data.cohort
    return [
        _p(text.header["title"], st.title),
        _p(f"{text.header['subtitle']} · {text.header['research_use']}", st.subtitle),
        Spacer(1, 3 * mm),
        _p(text.sections["patient"], st.section),
        _patient_block(data, text, st),
        _p(text.sections["result"], st.section),
        _result_block(data, text, st),
        Spacer(1, 2 * mm),
        _image(figs.score_bar),
        _p(text.fill("captions", "score_bar", cutoff_source=cohort.cutoff_source), st.caption),
        Spacer(1, 2 * mm),
        _sentence_box(content.plain_sentence(data, text), st, text),
        *_page_one_notes(data, text, st),
        *_warning_pointer(data, text, st),
        KeepTogether(
            [
                _p(text.sections["where"], st.section),
                _side_by_side(
                    [
                        _image(figs.distribution),
                        _p(text.fill("captions", "distribution", n=cohort.n, cohort=cohort.name), st.caption),
                    ],
                    [_image(figs.km), _p(text.fill("captions", "km"), st.caption)],
                    CONTENT_W / 2,
                ),
            ]
        ),
    ]


# --- page 2: gene signature and the slide ---------------------------------------------------------------


def _reliability_cell(row: GeneRow) -> str:
    """Cross-validated r of the gene and a tick when it passes the reliability rule ('–': not evaluated)."""
    if row.cv_r is None:
        return "–"
    return f"{row.cv_r:.2f}" + (" ✓" if row.reliable else "")


def _gene_table(data: ReportData, text: ReportText, st: _Styles, settings: ReportSettings) -> Table:
    rows, _ = content.gene_rows_for_pdf(data.signature, settings.max_gene_rows)
    header = [
        "Gene",
        f"Predicted\n({data.signature.expression_unit})",
        "z-score",
        "Percentile",
        "HR per SD",
        "Effect of higher\nexpression",
    ]
    with_cv = data.signature.reliability is not None  # the bundle stores a cross-validated evaluation
    if with_cv:
        header.append("CV r")
    body = []
    for row in rows:
        mark = " †" if not row.in_calibration_range else ""
        if abs(row.hazard_ratio_per_sd - 1.0) < 1e-9:
            effect = "none (not in model)"
        else:
            effect = "more risk ↑" if row.raises_risk else "less risk ↓"
        body.append(
            [
                row.gene + mark,
                f"{row.expression:.2f}",
                f"{row.z_score:+.2f}",
                f"{row.percentile:.0f}",
                f"{row.hazard_ratio_per_sd:.2f}",
                effect,
                *([_reliability_cell(row)] if with_cv else []),
            ]
        )
    widths = [18, 17, 11, 15, 13, 22, 12] if with_cv else [22, 20, 14, 15, 15, 22]
    scale = _GENE_TABLE_MM / sum(widths)
    table = Table(
        [header, *body],
        colWidths=[w * scale * mm for w in widths],
        rowHeights=[_GENE_HEADER_MM * mm] + [_GENE_ROW_MM * mm] * len(body),
    )
    style = [
        ("FONT", (0, 0), (-1, 0), FONT_BOLD, 6.8, 7.8),
        ("FONT", (0, 1), (-1, -1), FONT, 7.2, 8),
        ("FONT", (0, 1), (0, -1), FONT_BOLD, 7.2, 8),
        ("ALIGN", (1, 0), (4, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor(text.accent_color)),
        ("TOPPADDING", (0, 0), (-1, -1), 0),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 0.5),
    ]
    for index, row in enumerate(rows, start=1):
        color = "#c62828" if row.raises_risk else "#1565c0"
        style.append(("TEXTCOLOR", (5, index), (5, index), colors.HexColor(color)))
        if index % 2 == 0:
            style.append(("BACKGROUND", (0, index), (-1, index), colors.HexColor("#f4f6f8")))
    table.setStyle(TableStyle(style))
    return table


def _page_two(
    data: ReportData, text: ReportText, st: _Styles, figs: _Figures, settings: ReportSettings
) -> list[Flowable]:
    sig = data.signature
    rows, truncated = content.gene_rows_for_pdf(sig, settings.max_gene_rows)
    notes = [text.fill("captions", "genes", unit=sig.expression_unit)]
    if truncated:
        notes.append(text.fill("captions", "genes_truncated", shown=len(rows), total=len(sig.genes)))
    if any(not row.in_calibration_range for row in rows):
        notes.append(f"† {text.captions['out_of_range']}.")
    if sig.reliability is not None:
        notes.append(
            f"CV r: the gene's cross-validated r (measured vs out-of-fold predicted) in the bundle's evaluation; "
            f"✓ reliably predicted ({sig.reliability})."
        )
    story: list[Flowable] = [
        _p(text.sections["signature"], st.section),
        _p(sig.name + (f". {sig.description}" if sig.description else ""), st.small),
        Spacer(1, 1.5 * mm),
        _side_by_side(
            [_gene_table(data, text, st, settings)], [_image(figs.genes)], (_GENE_TABLE_MM + 2) * mm
        ),
        _p(" ".join(notes), st.caption),
    ]
    if figs.slide is not None and data.images is not None:
        tiles = len(data.images.tile_coords)
        tile_um = data.images.tile_size * data.slide.mpp
        caption = text.fill("captions", "thumbnail", tiles=tiles, tile_um=f"{tile_um:.0f}")
        story += [
            KeepTogether(
                [
                    _p(text.sections["slide"], st.section),
                    _image(figs.slide),
                    _p(caption + " " + data.images.heatmap_statement, st.caption),
                ]
            )
        ]
    return story


# --- page 3: quality control, method and provenance, intended use ----------------------------------------


def _key_value_table(
    rows: list[tuple[str, str]], st: _Styles, text: ReportText, key_w: float = 42 * mm
) -> Table:
    cells = [[_p(key, st.cell_bold), _p(value, st.cell)] for key, value in rows]
    table = Table(cells, colWidths=[key_w, CONTENT_W - key_w])
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d5dae0")),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ]
        )
    )
    return table


def _qc_section(data: ReportData, text: ReportText, st: _Styles) -> list[Flowable]:
    qc, slide = data.qc, data.slide
    rows = [
        ("Tissue area", f"{qc.tissue_area_mm2:.1f} mm² ({100 * qc.tissue_fraction:.1f}% of the slide)"),
        (
            "Tiles",
            f"{qc.tiles_kept} kept after tissue and contrast filters, {qc.tiles_used} used by the model",
        ),
        ("Resolution", f"{slide.mpp:.4g} µm/px at level 0 (source: {slide.mpp_source})"),
        ("Slide", f"{slide.format} · {slide.width_px} × {slide.height_px} px"),
    ]
    if data.images is not None:
        rows.insert(
            2,
            (
                "Tile size",
                f"{data.images.tile_size} px at level 0 = {data.images.tile_size * slide.mpp:.0f} µm",
            ),
        )
    warnings = content.all_warnings(data, text)
    items = [_p(f"⚠ {w.message}", st.warning) for w in warnings] or [_p(text.warnings["none"], st.body)]
    return [
        _p(text.sections["qc"], st.section),
        _key_value_table(rows, st, text),
        Spacer(1, 1.5 * mm),
        *items,
    ]


def _performance_table(data: ReportData, st: _Styles, text: ReportText) -> Table:
    rows = [["Cross-validated performance", "Value", "95% CI", "Note"]]
    for metric in data.cohort.performance:
        ci = "–" if metric.lower is None or metric.upper is None else f"{metric.lower:.3f}–{metric.upper:.3f}"
        rows.append([metric.name, f"{metric.value:.3f}", ci, metric.note])
    table = Table(rows, colWidths=[60 * mm, 22 * mm, 32 * mm, CONTENT_W - 114 * mm])
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), FONT_BOLD, 7.5, 9),
                ("FONT", (0, 1), (-1, -1), FONT, 7.5, 9),
                ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor(text.accent_color)),
                ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#d5dae0")),
                ("ALIGN", (1, 0), (2, -1), "RIGHT"),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ]
        )
    )
    return table


def _method_section(data: ReportData, text: ReportText, st: _Styles) -> list[Flowable]:
    prov, cohort = data.provenance, data.cohort
    trained = "trained" if prov.bundle_trained else "UNTRAINED demonstration weights"
    stages = " · ".join(f"{name} {seconds:.1f} s" for name, seconds in data.stage_seconds.items())
    cutoffs = ", ".join(f"{c:g}" for c in cohort.cutoffs)
    rows = [
        (
            "Software",
            f"sequoia-clinic {prov.software_version} (device: {prov.device}, encoder {prov.precision})",
        ),
        ("Model bundle", f"{prov.bundle_name} {prov.bundle_version} ({trained})"),
        ("Bundle sha256", prov.bundle_sha256),
    ]
    if prov.encoder:
        rows.append(("Tile encoder", prov.encoder))
    rows += [
        ("Risk model", prov.risk_model_name),
        ("Risk model sha256", prov.risk_model_sha256),
        (
            "Calibration cohort",
            f"{cohort.name}: n = {cohort.n}, {cohort.events} events; endpoint "
            f"{cohort.endpoint.lower()}" + (f". {cohort.description}" if cohort.description else ""),
        ),
        (
            "Risk groups",
            f"{', '.join(data.risk.group_names)}; cut-offs at score {cutoffs} ({cohort.cutoff_source})",
        ),
        ("Slide sha256", data.slide.sha256),
        ("Run time", f"{data.total_seconds:.1f} s" + (f" ({stages})" if stages else "")),
        ("Result created", data.created),
    ]
    return [
        KeepTogether([_p(text.sections["method"], st.section), _key_value_table(rows, st, text)]),
        Spacer(1, 2 * mm),
        KeepTogether([_performance_table(data, st, text)]),
    ]


def _intended_use_section(data: ReportData, text: ReportText, st: _Styles) -> list[Flowable]:
    bullets = ListFlowable(
        [ListItem(_p(item, st.small), leftIndent=10) for item in text.limitations],
        bulletType="bullet",
        start="•",
        leftIndent=10,
        bulletFontName=FONT,
        bulletFontSize=7.5,
    )
    story: list[Flowable] = [
        _p(text.sections["intended_use"], st.section),
        _p(text.intended_use, st.body),
        Spacer(1, 1.5 * mm),
        bullets,
    ]
    if data.demo or not data.provenance.bundle_trained:
        demo = ParagraphStyle(
            "demo", st.body, fontName=FONT_BOLD, textColor=colors.HexColor(text.banner_color)
        )
        story += [Spacer(1, 2 * mm), _p(text.demo_statement, demo)]
    return story


# --- document assembly ------------------------------------------------------------------------------------


def _story(data: ReportData, text: ReportText, figs: _Figures, settings: ReportSettings) -> list[Flowable]:
    st = _styles(text)
    return [
        *_page_one(data, text, st, figs),
        PageBreak(),
        *_page_two(data, text, st, figs, settings),
        KeepTogether(_qc_section(data, text, st)),
        *_method_section(data, text, st),
        *_intended_use_section(data, text, st),
    ]


def _build(
    data: ReportData, text: ReportText, figs: _Figures, settings: ReportSettings, total_pages: int
) -> tuple[bytes, int]:
    buffer = io.BytesIO()
    top = (BANNER_H if data.demo else 0) + HEADER_H
    doc = BaseDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=top,
        bottomMargin=FOOTER_H + 3 * mm,
        title=f"Molecular risk report {data.report_id}",
        author="sequoia-clinic",
        creator="sequoia-clinic",
        subject=text.header["research_use"],
        invariant=1,
    )
    frame = Frame(
        MARGIN,
        FOOTER_H + 3 * mm,
        CONTENT_W,
        PAGE_H - top - FOOTER_H - 5 * mm,
        id="body",
        leftPadding=0,
        rightPadding=0,
        topPadding=0,
        bottomPadding=0,
    )
    on_page: Callable[[Canvas, BaseDocTemplate], None] = partial(
        _draw_page, ctx=_PageContext(data, text, total_pages)
    )
    doc.addPageTemplates([PageTemplate(id="report", frames=[frame], onPage=on_page)])
    doc.build(_story(data, text, figs, settings))
    return buffer.getvalue(), doc.page


def render_report_pdf_bytes(
    data: ReportData, settings: ReportSettings | None = None, text: ReportText | None = None
) -> bytes:
    """Render the report and return the PDF bytes (deterministic for the same data)."""
    settings = settings or ReportSettings()
    text = text or load_report_text(settings.templates_dir)
    _register_fonts()
    figs = _render_figures(data, text, settings)
    # Two passes: the first counts the pages so that every footer can say "Page n of N".
    _, pages = _build(data, text, figs, settings, total_pages=0)
    pdf, _ = _build(data, text, figs, settings, total_pages=pages)
    return pdf


def render_report_pdf(
    data: ReportData, out: Path, settings: ReportSettings | None = None, text: ReportText | None = None
) -> None:
    """Render the report to ``out`` atomically (nothing is left behind if rendering fails)."""
    write_bytes_atomic(Path(out), render_report_pdf_bytes(data, settings, text))
