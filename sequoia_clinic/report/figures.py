"""The report's matplotlib figures, returned as PNG bytes at their printed size.

Figures are built with the object-oriented ``matplotlib.figure.Figure`` API on the Agg canvas (no pyplot,
no display, no global figure state); fonts are given in points at the printed size, so 7 pt in a figure is
7 pt on paper. PNG metadata is fixed so that the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; the OO API below never opens a window anyway

import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib import ticker, transforms  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Polygon, Rectangle  # noqa: E402

from sequoia_clinic.report.model import CalibrationCohort, GeneRow, RiskResult, SlideImages  # noqa: E402
from sequoia_clinic.report.templates import ReportText  # noqa: E402

MM = 1 / 25.4  # inches per millimetre
FONT = 7.5  # base font size in points
_RC: Any = {  # rcParams; typed Any because matplotlib types the keys as one long Literal
    "font.size": FONT,
    "font.family": "DejaVu Sans",
    "axes.titlesize": FONT + 0.5,
    "axes.labelsize": FONT,
    "xtick.labelsize": FONT - 0.5,
    "ytick.labelsize": FONT - 0.5,
    "legend.fontsize": FONT - 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "sequoia-clinic",
}


@dataclass(frozen=True)
class FigureImage:
    """A rendered figure: PNG bytes (charts) or JPEG bytes (slide pictures), and its printed size in mm."""

    data: bytes
    width_mm: float
    height_mm: float


def _new_figure(width_mm: float, height_mm: float) -> Figure:
    return Figure(figsize=(width_mm * MM, height_mm * MM))


def _to_jpeg(fig: Figure, dpi: int) -> FigureImage:
    """JPEG (quality 92, no chroma subsampling) for figures made of slide pictures: a third of the time of
    PNG to encode and to embed (reportlab passes JPEG through; a PNG it decodes and compresses again), and
    far smaller for photographic content. Charts stay PNG (sharp lines and text)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=92, subsampling=0, dpi=(dpi, dpi))
    width, height = fig.get_size_inches()
    return FigureImage(buffer.getvalue(), width / MM, height / MM)


def _to_png(fig: Figure, dpi: int) -> FigureImage:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    width, height = fig.get_size_inches()
    return FigureImage(buffer.getvalue(), width / MM, height / MM)


def _render(draw, width_mm: float, height_mm: float, dpi: int, *args, photo: bool = False) -> FigureImage:  # noqa: ANN001
    with matplotlib.rc_context(_RC):
        fig = _new_figure(width_mm, height_mm)
        draw(fig, *args)
        return _to_jpeg(fig, dpi) if photo else _to_png(fig, dpi)


def _group_spans(cutoffs: Sequence[float], low: float, high: float) -> list[tuple[float, float]]:
    edges = [low, *cutoffs, high]
    return list(zip(edges[:-1], edges[1:], strict=True))


# --- 1. the score on its fixed bar -------------------------------------------------------------------


def _draw_score_bar(fig: Figure, risk: RiskResult, cutoffs: Sequence[float], text: ReportText) -> None:
    ax = fig.add_axes((0.03, 0.34, 0.94, 0.36))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1)
    for index, (start, end) in enumerate(_group_spans(cutoffs, 0.0, 100.0)):
        ax.add_patch(
            Rectangle(
                (start, 0),
                end - start,
                1,
                facecolor=text.group_tint(index, len(risk.group_names)),
                edgecolor=text.group_color(index, len(risk.group_names)),
                linewidth=0.8,
            )
        )
        bold = "bold" if index == risk.group_index else "normal"
        ax.text(
            (start + end) / 2,
            0.5,
            risk.group_names[index],
            ha="center",
            va="center",
            color=text.group_color(index, len(risk.group_names)),
            fontsize=FONT + 1,
            fontweight=bold,
        )
    ticks = sorted({0.0, 100.0, *cutoffs})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_yticks([])
    for side in ("left", "top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("Risk score (percentile in the calibration cohort, 0–100)", labelpad=2)
    marker = Polygon(
        [(risk.score - 1.2, 1.45), (risk.score + 1.2, 1.45), (risk.score, 1.02)],
        closed=True,
        facecolor="black",
        clip_on=False,
    )
    ax.add_patch(marker)
    ax.plot([risk.score, risk.score], [0, 1], color="black", linewidth=1.6)
    ha = "left" if risk.score < 50 else "right"
    offset = 1.8 if ha == "left" else -1.8
    ax.text(
        risk.score + offset,
        1.25,
        f"This patient: {risk.score:.0f}",
        ha=ha,
        va="center",
        fontsize=FONT + 0.5,
        fontweight="bold",
        clip_on=False,
    )


def score_bar(
    risk: RiskResult, cutoffs: Sequence[float], text: ReportText, width_mm: float, dpi: int
) -> FigureImage:
    return _render(_draw_score_bar, width_mm, 24, dpi, risk, cutoffs, text)


# --- 2. the cohort's score distribution with the patient marked ----------------------------------------


def _draw_distribution(fig: Figure, cohort: CalibrationCohort, risk: RiskResult, text: ReportText) -> None:
    ax = fig.add_axes((0.14, 0.15, 0.83, 0.70))
    values = np.asarray(cohort.linear_predictors, dtype=float)
    low = min(values.min(), risk.linear_predictor)
    high = max(values.max(), risk.linear_predictor)
    pad = 0.04 * (high - low or 1.0)
    edges = np.linspace(low - pad, high + pad, 31)
    counts, _ = np.histogram(values, bins=edges)
    lp_cuts = cohort.cutoffs_on_linear_predictor()
    centres = (edges[:-1] + edges[1:]) / 2
    groups = np.searchsorted(np.asarray(lp_cuts), centres, side="right")
    ax.bar(
        centres,
        counts,
        width=np.diff(edges),
        color=[text.group_color(g, len(lp_cuts) + 1) for g in groups],
        alpha=0.75,
        edgecolor="white",
        linewidth=0.4,
    )
    top = max(counts.max(), 1) * 1.15
    ax.set_ylim(0, top)
    ax.set_xlim(edges[0], edges[-1])
    for cut_lp, cut_score in zip(lp_cuts, cohort.cutoffs, strict=True):
        ax.axvline(cut_lp, color="#444444", linestyle="--", linewidth=0.8)
        ax.text(
            cut_lp,
            top * 0.98,
            f"score {cut_score:g}",
            rotation=90,
            ha="right",
            va="top",
            fontsize=FONT - 1.5,
            color="#333333",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.6},
        )
    ax.axvline(risk.linear_predictor, color="black", linewidth=1.6)
    position = (risk.linear_predictor - edges[0]) / (edges[-1] - edges[0])
    ha = "left" if position < 0.25 else "right" if position > 0.75 else "center"
    ax.annotate(
        "This patient",
        xy=(risk.linear_predictor, top),
        xytext=(risk.linear_predictor, top * 1.12),
        ha=ha,
        va="bottom",
        fontsize=FONT,
        fontweight="bold",
        annotation_clip=False,
        arrowprops={"arrowstyle": "-|>", "color": "black", "linewidth": 1.0},
    )
    ax.set_xlabel("Linear predictor (log hazard ratio vs cohort mean)")
    ax.set_ylabel("Patients (n)")
    ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    # No title: the caption names the cohort, and a title would collide with the patient label.


def score_distribution(
    cohort: CalibrationCohort, risk: RiskResult, text: ReportText, width_mm: float, height_mm: float, dpi: int
) -> FigureImage:
    return _render(_draw_distribution, width_mm, height_mm, dpi, cohort, risk, text)


# --- 3. cross-validated KM curves of the cohort's groups, numbers at risk underneath --------------------


def _draw_km(fig: Figure, cohort: CalibrationCohort, risk: RiskResult, text: ReportText) -> None:
    n_groups = len(cohort.km_curves)
    table_h = 0.06 * (n_groups + 1)
    bottom = 0.11 + table_h + 0.06
    left = 0.25
    ax = fig.add_axes((left, bottom, 0.97 - left, 0.95 - bottom))
    # The axis ends at the last at-risk time (the caller stops there because few patients remain).
    t_max = cohort.at_risk_times[-1] if cohort.at_risk_times else max(c.times[-1] for c in cohort.km_curves)
    for index, curve in enumerate(cohort.km_curves):
        mine = index == risk.group_index
        color = text.group_color(index, n_groups)
        times = np.asarray(curve.times, dtype=float)
        ax.fill_between(
            times,
            100 * np.asarray(curve.lower),
            100 * np.asarray(curve.upper),
            step="post",
            color=color,
            alpha=0.16 if mine else 0.07,
            linewidth=0,
        )
        label = f"{curve.group} (n = {curve.n}, {curve.events} events)" + ("  ◀ this patient" if mine else "")
        ax.step(
            times,
            100 * np.asarray(curve.survival),
            where="post",
            color=color,
            linewidth=2.4 if mine else 1.0,
            alpha=1.0 if mine else 0.65,
            label=label,
            zorder=3 if mine else 2,
        )
    ax.set_xlim(0, t_max)
    ax.set_ylim(0, 102)
    ax.set_xticks(cohort.at_risk_times)
    ax.set_xlabel(f"Time ({cohort.time_unit})", labelpad=1)
    ax.set_ylabel(textwrap.fill(f"{cohort.endpoint} (%)", 26))
    ax.legend(loc="lower left", frameon=False, handlelength=1.6)
    ax.grid(axis="y", color="#dddddd", linewidth=0.5)
    # Numbers at risk: hand-drawn text rows aligned with the x ticks (lifelines' add_at_risk_counts needs
    # fitted KaplanMeierFitter objects, and the report only has the stored curves).
    table = fig.add_axes((left, 0.02, 0.97 - left, table_h), sharex=ax)
    table.set_ylim(n_groups + 0.6, -0.4)
    table.axis("off")
    title_at = transforms.blended_transform_factory(fig.transFigure, table.transData)
    table.text(
        0.02,
        0,
        "Number at risk",
        transform=title_at,
        ha="left",
        va="center",
        fontsize=FONT - 0.5,
        fontweight="bold",
    )
    for row, curve in enumerate(cohort.km_curves, start=1):
        weight = "bold" if row - 1 == risk.group_index else "normal"
        table.text(
            -0.07,
            row,
            curve.group,
            transform=table.get_yaxis_transform(),
            ha="right",
            va="center",
            color=text.group_color(row - 1, n_groups),
            fontsize=FONT - 0.5,
            fontweight=weight,
        )
        for time, count in zip(cohort.at_risk_times, curve.at_risk, strict=True):
            table.text(
                time, row, str(count), ha="center", va="center", fontsize=FONT - 0.5, fontweight=weight
            )


def km_curves(
    cohort: CalibrationCohort, risk: RiskResult, text: ReportText, width_mm: float, height_mm: float, dpi: int
) -> FigureImage:
    return _render(_draw_km, width_mm, height_mm, dpi, cohort, risk, text)


# --- 4. compact gene bar chart (rows line up with the gene table) ---------------------------------------


def _draw_gene_bars(
    fig: Figure, rows: Sequence[GeneRow], header_mm: float, row_mm: float, footer_mm: float
) -> None:
    height_mm = fig.get_size_inches()[1] / MM
    bottom = footer_mm / height_mm
    ax = fig.add_axes((0.08, bottom, 0.86, len(rows) * row_mm / height_mm))
    z = np.array([row.z_score for row in rows])
    colors = ["#c62828" if row.raises_risk else "#1565c0" for row in rows]
    ax.barh(np.arange(len(rows)), z, color=colors, height=0.62)
    limit = max(3.0, float(np.ceil(np.abs(z).max())))
    ax.set_xlim(-limit, limit)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks([])
    ax.axvline(0, color="black", linewidth=0.6)
    for edge in (-2, 2):
        ax.axvline(edge, color="#bbbbbb", linewidth=0.5, linestyle=":")
    ax.spines["left"].set_visible(False)
    ax.set_xlabel("z-score vs calibration cohort (SD)", labelpad=1)
    legend_y = 1 + 0.35 * header_mm / (len(rows) * row_mm)
    ax.text(
        0.0,
        legend_y,
        "■ higher = more risk",
        color="#c62828",
        transform=ax.transAxes,
        ha="left",
        va="center",
        fontsize=FONT - 1,
    )
    ax.text(
        1.0,
        legend_y,
        "■ higher = less risk",
        color="#1565c0",
        transform=ax.transAxes,
        ha="right",
        va="center",
        fontsize=FONT - 1,
    )


def gene_bars(
    rows: Sequence[GeneRow], width_mm: float, header_mm: float, row_mm: float, dpi: int
) -> FigureImage:
    footer_mm = 10.0
    height_mm = header_mm + len(rows) * row_mm + footer_mm
    return _render(_draw_gene_bars, width_mm, height_mm, dpi, rows, header_mm, row_mm, footer_mm)


# --- 5. the slide: thumbnail with mask and tiles, heatmaps of top genes ---------------------------------


def _show_slide(ax, thumbnail: np.ndarray, width: int, height: int, gray: bool) -> None:  # noqa: ANN001
    image = thumbnail
    if gray:  # a light grey background lets the heatmap colours stand out
        lum = thumbnail.astype(float) @ np.array([0.299, 0.587, 0.114])
        image = (155 + 0.39 * lum).clip(0, 255).astype(np.uint8)
        ax.imshow(
            image, cmap="gray", vmin=0, vmax=255, extent=(0, width, height, 0), interpolation="antialiased"
        )
    else:
        ax.imshow(image, extent=(0, width, height, 0), interpolation="antialiased")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#999999")
        spine.set_linewidth(0.5)


def _tile_patches(images: SlideImages) -> list[Rectangle]:
    size = images.tile_size
    return [Rectangle((float(x), float(y)), size, size) for x, y in images.tile_coords]


def _tile_occupancy(images: SlideImages, width: int, height: int, shape: tuple[int, int]) -> np.ndarray:
    """A raster (rows, cols) covering the slide that is 1 where a used tile lies, for outlining."""
    rows, cols = shape
    occupancy = np.zeros((rows + 2, cols + 2))  # a blank border closes contours at the slide edge
    sx, sy = cols / width, rows / height
    for x, y in images.tile_coords:
        c0, r0 = int(x * sx), int(y * sy)
        c1, r1 = math.ceil((x + images.tile_size) * sx), math.ceil((y + images.tile_size) * sy)
        occupancy[r0 + 1 : r1 + 1, c0 + 1 : c1 + 1] = 1.0
    return occupancy


def _outline(ax, mask: np.ndarray, width: int, height: int, color: str, linewidth: float) -> None:  # noqa: ANN001
    """Contour a (padded or not) binary raster drawn over the whole slide in level-0 coordinates."""
    xs = (np.arange(mask.shape[1]) + 0.5) * width / mask.shape[1]
    ys = (np.arange(mask.shape[0]) + 0.5) * height / mask.shape[0]
    ax.contour(xs, ys, mask, levels=[0.5], colors=[color], linewidths=linewidth)


def _scale_bar(ax, width: int, height: int, mpp: float) -> None:  # noqa: ANN001
    """Draw a round-length scale bar (mm) in the lower left corner of a slide panel."""
    slide_mm = width * mpp / 1000
    length_mm = 10 ** math.floor(math.log10(max(slide_mm / 4, 1e-6)))
    for factor in (5, 2):
        if length_mm * factor <= slide_mm / 3:
            length_mm *= factor
            break
    length_px = length_mm * 1000 / mpp
    x0, y0 = 0.05 * width, height - 0.04 * height
    ax.plot([x0, x0 + length_px], [y0, y0], color="black", linewidth=2, solid_capstyle="butt")
    label = f"{length_mm:g} mm" if length_mm >= 1 else f"{length_mm * 1000:g} µm"
    ax.text(x0 + length_px / 2, y0 - 0.015 * height, label, ha="center", va="bottom", fontsize=FONT - 1.5)


def _draw_slide(
    fig: Figure,
    images: SlideImages,
    width: int,
    height: int,
    mpp: float,
    genes: Sequence[tuple[str, str]],
    layout: tuple[float, float, float],
) -> None:
    panel_h_frac, bottom, bar_drop = layout  # fractions of the figure height (see slide_panels)
    n_panels = 1 + len(genes)
    gap = 0.02
    panel_w = (1 - gap * (n_panels + 1)) / n_panels
    ax = fig.add_axes((gap, bottom, panel_w, panel_h_frac))
    _show_slide(ax, images.thumbnail, width, height, gray=False)
    if images.tissue_mask is not None:
        _outline(ax, images.tissue_mask.astype(float), width, height, "#1565c0", 0.9)
    # Thousands of tile outlines would print as a grey grid, so the used tiles are shown as one tinted,
    # outlined region; the occupancy raster has a one-cell border, hence the widened extent.
    rows, cols = images.thumbnail.shape[0] * 2, images.thumbnail.shape[1] * 2
    occupancy = _tile_occupancy(images, width, height, (rows, cols))
    cell_x, cell_y = width / cols, height / rows
    extent = (-cell_x, width + cell_x, height + cell_y, -cell_y)
    tint = np.zeros((*occupancy.shape, 4))
    tint[occupancy > 0] = mcolors.to_rgba("#2e7d32", 0.28)
    ax.imshow(tint, extent=extent, interpolation="nearest")
    xs = np.linspace(-cell_x / 2, width + cell_x / 2, occupancy.shape[1])
    ys = np.linspace(-cell_y / 2, height + cell_y / 2, occupancy.shape[0])
    ax.contour(xs, ys, occupancy, levels=[0.5], colors=["#1b5e20"], linewidths=0.7)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    _scale_bar(ax, width, height, mpp)
    ax.set_title("Tissue and tiles used", fontsize=FONT, pad=3)
    for index, (gene, unit) in enumerate(genes, start=1):
        left = gap + index * (panel_w + gap)
        ax = fig.add_axes((left, bottom, panel_w, panel_h_frac))
        _show_slide(ax, images.thumbnail, width, height, gray=True)
        values = next(h.values for h in images.heatmaps if h.gene == gene).astype(float)
        finite = values[np.isfinite(values)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if vmax <= vmin:
            vmax = vmin + 1e-6
        collection = PatchCollection(
            _tile_patches(images), cmap="viridis", norm=mcolors.Normalize(vmin=vmin, vmax=vmax), linewidth=0
        )
        collection.set_array(values)
        ax.add_collection(collection)
        ax.set_title(gene, fontsize=FONT, fontweight="bold", pad=3)
        cax = fig.add_axes((left + 0.1 * panel_w, bottom - bar_drop, 0.8 * panel_w, bar_drop / 3))
        bar = fig.colorbar(collection, cax=cax, orientation="horizontal")
        bar.ax.tick_params(labelsize=FONT - 1.5, length=2, pad=1)
        bar.locator = ticker.MaxNLocator(nbins=2)  # few, short labels: the panels are narrow
        decimals = min(6, max(0, 1 - math.floor(math.log10(vmax - vmin))))
        bar.formatter = ticker.FormatStrFormatter(f"%.{decimals}f")
        bar.update_ticks()
        bar.set_label(f"predicted {unit}", fontsize=FONT - 1, labelpad=1)


def slide_panels(
    images: SlideImages,
    width: int,
    height: int,
    mpp: float,
    genes: Sequence[tuple[str, str]],
    width_mm: float,
    dpi: int,
) -> FigureImage:
    """Thumbnail with tissue outline and tiles, then one heatmap panel per ``(gene, unit)``."""
    n_panels = 1 + len(genes)
    panel_w_mm = width_mm * (1 - 0.02 * (n_panels + 1)) / n_panels
    aspect = min(max(height / width, 0.45), 1.6)
    panel_h_mm = panel_w_mm * aspect
    title_mm, below_mm, bar_drop_mm = 6.0, 17.0, 7.5  # fixed room for titles and colour bars, in mm
    fig_h_mm = panel_h_mm + title_mm + below_mm
    layout = (panel_h_mm / fig_h_mm, below_mm / fig_h_mm, bar_drop_mm / fig_h_mm)
    return _render(
        _draw_slide, width_mm, fig_h_mm, dpi, images, width, height, mpp, genes, layout, photo=True
    )
