"""Matplotlib drawings shared by the model card, ``stratify`` and the PDF report (Agg backend only).

Kaplan-Meier curves are drawn from the :class:`~sequoia_clinic.survival.records.KMGroupCurve` records of
:mod:`sequoia_clinic.survival.km` (step survival, 95% CI band, at-risk and cumulative-event counts at tick
times) rather than from lifelines fitter objects, so the same function can redraw a model's stored curves without any patient data;
lifelines' ``add_at_risk_counts`` only works on fitted objects, hence the small hand-written table.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sequoia_clinic.survival.records import CalibrationCurve, KMGroupCurve, horizon_key  # noqa: E402

GROUP_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")


def draw_km(
    ax: Axes,
    curves: Sequence[KMGroupCurve],
    endpoint: str = "event",
    x_max: float | None = None,
    title: str | None = None,
    at_risk: bool = True,
) -> None:
    """KM curves with 95% CI bands and an at-risk / events table under the axis."""
    for i, curve in enumerate(curves):
        colour = GROUP_COLOURS[i % len(GROUP_COLOURS)]
        label = f"{curve.label} (n={curve.n}, events={curve.events})"
        ax.step(curve.times, curve.survival, where="post", color=colour, label=label, lw=1.6)
        ax.fill_between(curve.times, curve.lower, curve.upper, step="post", color=colour, alpha=0.15, lw=0)
    ticks = list(curves[0].ticks) if curves else []
    if x_max is None:
        x_max = ticks[-1] if ticks else None
    if x_max:
        ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("years")
    ax.set_ylabel(f"probability free of {endpoint}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    if at_risk and ticks:
        ax.set_xticks(ticks)
        _at_risk_table(ax, curves, ticks)


def _at_risk_table(ax: Axes, curves: Sequence[KMGroupCurve], ticks: Sequence[float]) -> None:
    """Rows 'group: at risk (events)' under the x axis, aligned with the ticks."""
    transform = ax.get_xaxis_transform()
    ax.text(
        0,
        -0.2,
        "at risk (cumulative events)",
        transform=ax.transAxes,
        fontsize=6.5,
        ha="left",
        va="top",
        style="italic",
    )
    for r, curve in enumerate(curves, start=1):
        y = -0.2 - 0.075 * r
        ax.text(
            -0.07,
            y,
            curve.label,
            transform=ax.transAxes,
            fontsize=6.5,
            ha="right",
            va="top",
            color=GROUP_COLOURS[(r - 1) % len(GROUP_COLOURS)],
        )
        for tick, n, e in zip(ticks, curve.at_risk, curve.cumulative_events, strict=True):
            ax.text(tick, y, f"{n} ({e})", transform=transform, fontsize=6.5, ha="center", va="top")


def draw_calibration(ax: Axes, tables: Sequence[CalibrationCurve], endpoint: str = "event") -> None:
    """Out-of-fold predicted vs Kaplan-Meier observed risk (95% CI) per predicted-risk bin, per horizon."""
    top = 0.05
    for i, table in enumerate(sorted(tables, key=lambda t: t.years)):
        colour = GROUP_COLOURS[i % len(GROUP_COLOURS)]
        rows = table.bins
        x = [r.predicted for r in rows]
        y = [r.observed for r in rows]
        err = [
            [max(r.observed - r.observed_lower, 0) for r in rows],
            [max(r.observed_upper - r.observed, 0) for r in rows],
        ]
        label = f"{horizon_key(table.years)} years"
        ax.errorbar(x, y, yerr=err, fmt="o-", color=colour, ms=4, lw=1, capsize=2, label=label)
        top = max(top, *x, *[r.observed_upper for r in rows])
    top = min(1.0, top * 1.05)
    ax.plot([0, top], [0, top], ls="--", color="grey", lw=0.8, label="ideal")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"predicted risk of {endpoint} (cross-validated)")
    ax.set_ylabel(f"observed risk of {endpoint} (Kaplan-Meier)")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.grid(alpha=0.3)
    ax.set_title("Calibration (predicted-risk quintiles)", fontsize=9)


def draw_lp_distribution(
    ax: Axes, lp: Sequence[float], cutoffs: Sequence[float], names: Sequence[str], marker: float | None = None
) -> None:
    """Histogram of the calibration cohort's linear predictors with the group cut-offs (and a patient)."""
    ax.hist(lp, bins=30, color="#999999", edgecolor="white")
    for c in cutoffs:
        ax.axvline(c, color="black", ls="--", lw=0.9)
    edges = [min(lp), *cutoffs, max(lp)]
    for i, name in enumerate(names):
        ax.text(
            (edges[i] + edges[i + 1]) / 2,
            0.97,
            name,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=7,
        )
    if marker is not None:
        ax.axvline(marker, color="#d62728", lw=2)
    ax.set_xlabel("linear predictor (calibration cohort)")
    ax.set_ylabel("patients")
    ax.set_title("Score distribution and risk-group cut-offs", fontsize=9)


def render_figure(fig: Figure, dpi: int = 150) -> dict[str, bytes]:
    """Render a figure to PNG and PDF bytes (reproducible: no creation date), then close it."""
    out = {}
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
        out[fmt] = buffer.getvalue()
    plt.close(fig)
    return out


def new_figure(width: float, height: float) -> Figure:
    return plt.figure(figsize=(width, height))
