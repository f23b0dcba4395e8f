"""The page around every view: one stylesheet from the package, inlined, so a saved page or a mailed report
shows the same without the hub."""
from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from html import escape
from importlib import resources

from console.charts import text

MAX_TABLE_ROWS = 500


class Markup(str):
    """Markup already escaped (a link): a table keeps it as it is."""


def _cell(value) -> str:
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return f'<td class="number">{escape(text(value))}</td>'
    return f"<td>{escape(text(value))}</td>"


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return (resources.files("console") / "static" / "console.css").read_text()


def page(title: str, body: str, nav: str = "") -> str:
    header = f"<header>{nav}</header>" if nav else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · Omnihub</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{stylesheet()}</style></head>'
            f'<body>{header}<main><h1>{escape(title)}</h1>{body}</main></body></html>')


def table(columns: list[str], rows: list[list], open_: bool = True) -> str:
    """Rows as a table, numbers aligned right; past MAX_TABLE_ROWS the rest are counted, not shown."""
    shown = rows[:MAX_TABLE_ROWS]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in shown)
    more = f'<p class="notice">{len(rows) - len(shown):,} more rows not shown.</p>' if len(rows) > len(shown) else ""
    summary = f"{len(rows):,} row{'s' if len(rows) != 1 else ''}"
    return (f'<details{" open" if open_ else ""}><summary>{summary}</summary>'
            f'<table data-rows="{len(rows)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}</details>')
