"""Load the report's wording and colours from ``templates/report.toml`` into a frozen record.

The PDF and the intended-use statement in result.json take all their prose from that file, so the
wording can be reviewed and changed without touching code. Missing keys or unknown placeholders raise
:class:`~sequoia_clinic.errors.ReportError` naming the file.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sequoia_clinic.errors import ReportError
from sequoia_clinic.locations import templates_dir

TEMPLATE_FILE = "report.toml"


def default_templates_dir() -> Path:
    """The shipped ``templates/`` directory, read from the installed package (sequoia_clinic/locations.py)."""
    return templates_dir()


@dataclass(frozen=True)
class ReportText:
    """All report prose and colours, as read from the template file."""

    source: Path
    banner: dict[str, str]
    header: dict[str, str]
    sections: dict[str, str]
    sentences: dict[str, str]
    captions: dict[str, str]
    warnings: dict[str, str]
    intended_use: str
    limitations: tuple[str, ...]
    demo_statement: str
    group_colors: tuple[str, ...]
    group_tints: tuple[str, ...]
    banner_color: str
    accent_color: str
    rule_color: str

    def fill(self, table: str, key: str, **values: Any) -> str:
        """Format entry ``key`` of ``table`` with ``values``; an unknown placeholder is a template error."""
        text = getattr(self, table)[key]
        try:
            return text.format(**values)
        except (KeyError, IndexError, ValueError) as exc:
            raise ReportError(
                f"template entry [{table}].{key} uses an unknown or malformed placeholder ({exc})",
                path=self.source,
                fix=f"Use only the placeholders {sorted(values)}.",
            ) from None

    def group_color(self, index: int, n_groups: int) -> str:
        return self.group_colors[_spread(index, n_groups, len(self.group_colors))]

    def group_tint(self, index: int, n_groups: int) -> str:
        return self.group_tints[_spread(index, n_groups, len(self.group_tints))]


def _spread(index: int, n_groups: int, n_colors: int) -> int:
    """Map group ``index`` of ``n_groups`` onto ``n_colors`` so the lowest and highest groups get the end
    colours (two groups: green and red, not green and amber)."""
    if n_groups <= 1 or n_colors <= 1:
        return 0
    return round(index * (n_colors - 1) / (n_groups - 1))


_REQUIRED: dict[str, tuple[str, ...]] = {
    "banner": ("demo", "demo_detail", "watermark"),
    "header": ("title", "subtitle", "research_use"),
    "sections": ("patient", "result", "where", "signature", "slide", "qc", "method", "intended_use"),
    "sentences": ("default", "no_ci", "no_risk", "not_estimable", "endpoint_event"),
    "captions": (
        "score_bar",
        "distribution",
        "km",
        "genes",
        "thumbnail",
        "genes_truncated",
        "out_of_range",
    ),
    "warnings": ("untrained", "lp_out_of_range", "genes_out_of_range", "none", "pointer"),
    "intended_use": ("statement", "limitations", "demo"),
    "layout": ("group_colors", "group_tints", "banner_color", "accent_color", "rule_color"),
}


_TEXT_TABLES = ("banner", "header", "sections", "sentences", "captions", "warnings")


def _table(doc: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    table = doc.get(name)
    if not isinstance(table, dict):
        raise ReportError(
            f"template table [{name}] is missing", path=path, fix="Restore it from the repository."
        )
    missing = [key for key in _REQUIRED[name] if key not in table]
    if missing:
        raise ReportError(
            f"template table [{name}] lacks {', '.join(missing)}",
            path=path,
            fix="Restore them from the repository.",
        )
    return table


def _strings(table: dict[str, Any], name: str, path: Path) -> dict[str, str]:
    for key, value in table.items():
        if not isinstance(value, str):
            raise ReportError(f"template entry [{name}].{key} must be a string", path=path)
        list(string.Formatter().parse(value))  # raises ValueError on unbalanced braces
    return dict(table)


def load_report_text(templates_dir: Path | None = None) -> ReportText:
    """Read ``report.toml`` from ``templates_dir`` (default: the shipped ``templates/``)."""
    path = (templates_dir or default_templates_dir()) / TEMPLATE_FILE
    if not path.is_file():
        raise ReportError("report template not found", path=path, fix="Restore templates/report.toml.")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        tables = {name: _table(doc, name, path) for name in _REQUIRED}
        text_tables = {n: _strings(tables[n], n, path) for n in _TEXT_TABLES}
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ReportError(f"report template is not valid TOML ({exc})", path=path) from None
    use, layout = tables["intended_use"], tables["layout"]
    return ReportText(
        source=path,
        banner=text_tables["banner"],
        header=text_tables["header"],
        sections=text_tables["sections"],
        sentences=text_tables["sentences"],
        captions=text_tables["captions"],
        warnings=text_tables["warnings"],
        intended_use=str(use["statement"]),
        limitations=tuple(str(item) for item in use["limitations"]),
        demo_statement=str(use["demo"]),
        group_colors=tuple(layout["group_colors"]),
        group_tints=tuple(layout["group_tints"]),
        banner_color=str(layout["banner_color"]),
        accent_color=str(layout["accent_color"]),
        rule_color=str(layout["rule_color"]),
    )
