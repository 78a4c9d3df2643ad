"""HTML tables of the report: ``html_table`` turns a DataFrame into a sortable ``<table>`` fragment
through a list of ``Col`` (key, header, formatter from ``harness.render.units``), and
``key_value_table`` sets run settings side by side, marking the rows that differ. Every header and
cell is escaped text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd
from markupsafe import Markup, escape

from harness.render.units import fmt_compact, fmt_text


@dataclass(frozen=True)
class Col:
    """One table column: source key, header text, cell formatter, and whether it sorts numerically."""

    key: str
    header: str
    fmt: Callable[[object], str] = fmt_text
    numeric: bool = False


def html_table(df: pd.DataFrame, cols: list[Col], caption: str | None = None, table_id: str | None = None):
    """An HTML <table class="sortable"> fragment; every header and cell is escaped text. Numeric
    cells carry their unformatted value in ``data-v`` for the page's sort script."""
    id_attr = f' id="{escape(table_id)}"' if table_id else ""
    parts = [f'<table class="sortable"{id_attr}>']
    if caption:
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(
        f'<th{" class=num" if c.numeric else ""} title="click to sort">{escape(c.header)}</th>' for c in cols)
        + "</tr></thead><tbody>")
    for rec in df.to_dict("records"):
        cells = []
        for c in cols:
            v = rec.get(c.key)
            text = escape(c.fmt(v))
            if c.numeric:
                try:
                    raw = float(v) if v is not None and v is not pd.NA and not (isinstance(v, float) and
                                                                               math.isnan(v)) else ""
                except (TypeError, ValueError):
                    raw = ""
                cells.append(f'<td class="num" data-v="{raw}">{text}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    if df.empty:
        parts.append(f'<tr><td colspan="{len(cols)}" class="empty">none</td></tr>')
    parts.append("</tbody></table>")
    return Markup("".join(parts))


def key_value_table(rows: list[tuple[str, list[object]]], headers: list[str]):
    """A comparison table: one row per key, one column per run; rows whose values differ are marked."""
    parts = ['<table class="kv"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for key, values in rows:
        texts = [fmt_compact(v) for v in values]
        differ = len(set(texts)) > 1
        parts.append(f'<tr{" class=differs" if differ else ""}><th>{escape(key)}</th>'
                     + "".join(f"<td>{escape(t)}</td>" for t in texts) + "</tr>")
    parts.append("</tbody></table>")
    return Markup("".join(parts))
