"""What each department looks at: its named queries (sinks/sql/queries, by name prefix), which of them are
drawn and how, and the same page as a web page, a self-contained HTML report, CSV or JSON.

The rows come from a `run_query(sql, parameters) -> (columns, rows)` given by whoever shows them: the hub's
console runs analysts' read-only sessions (sinks/read_only.py), `omnihub report` asks the running hub.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from typing import Callable

from console import charts
from console.layout import page, table
from sinks.named_queries import named_query, query_names, query_parameters, query_title

RunQuery = Callable[[str, dict], tuple[list[str], list[list]]]

DEPARTMENTS = {
    "kpis": "Shared KPIs",
    "it": "IT and operations: load, capacity, lag, dead letters",
    "marketing": "Marketing: campaign and best customers",
    "purchasing": "Purchasing: SKU demand",
    "operations": "Operations and logistics: orders and shipping",
    "finance": "Finance: profitability, online and store",
    "service": "Customer service",
}
PERSONAL = {"service"}   # pages showing what people wrote or their identifiers: the service role only
HIDDEN = {"it_load_per_minute"}   # drawn as the marks on the load chart, listed below it
FIRST = ["it_load_by_channel_per_minute", "it_load_per_minute"]   # what a page opens with


@dataclass
class Section:
    name: str
    title: str
    columns: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    skipped: str = ""


def department_queries(department: str) -> list[str]:
    names = [name for name in query_names() if name.split("_", 1)[0] == department]
    names.sort(key=lambda name: FIRST.index(name) if name in FIRST else len(FIRST))
    if department not in DEPARTMENTS or not names:
        raise KeyError(f"no department {department!r}; departments: {', '.join(DEPARTMENTS)}")
    return names


def collect(department: str, run_query: RunQuery, parameters: dict) -> list[Section]:
    """Every query of the department, run with the parameters it names; one it cannot run says why."""
    sections = []
    for name in department_queries(department):
        section = Section(name, query_title(name))
        missing = sorted(query_parameters(name) - set(parameters))
        if missing:
            section.skipped = "needs " + ", ".join(missing)
        else:
            wanted = {key: value for key, value in parameters.items() if key in query_parameters(name)}
            section.columns, section.rows = run_query(named_query(name), wanted)
        sections.append(section)
    return sections


def department_parameters(run_query: RunQuery, capacity: int, asked: dict[str, str]) -> dict:
    """The parameters department queries name: the campaign asked for, else the latest announced one; the
    declared capacity."""
    parameters = {"capacity": str(capacity)}
    campaign = asked.get("campaign")
    if not campaign:
        _, campaigns = run_query(console_query("campaigns"), {})
        campaign = campaigns[0][0] if campaigns else None
    if campaign:
        parameters["campaign"] = campaign
    return parameters


def console_query(name: str) -> str:
    from importlib import resources

    return (resources.files("console") / "sql" / f"{name}.sql").read_text()


def _records(section: Section) -> list[dict]:
    return [dict(zip(section.columns, row)) for row in section.rows]


def _chart(section: Section, sections: dict[str, Section], parameters: dict) -> str:
    """The chart of a query that people would rather look at than read; '' for a table only."""
    rows = _records(section)
    if not rows:
        return ""
    name = section.name
    if name in ("kpis_shared", "marketing_best_customers"):
        return charts.tiles(section.columns, section.rows[0])
    if name == "it_load_by_channel_per_minute":
        minutes = sorted({charts.text(r["minute"]) for r in rows})
        channels = sorted({r["channel"] for r in rows if r["channel"]})   # '' marks a minute without events
        counts = {(charts.text(r["minute"]), r["channel"]): r["events"] for r in rows}
        totals = [sum(int(counts.get((m, c), 0)) for c in channels) for m in minutes]
        series = [("all channels", totals)] + [(c, [counts.get((m, c), 0) for m in minutes]) for c in channels]
        flagged = sections.get("it_load_per_minute")
        marks = [(charts.text(r["minute"]), r["flag"]) for r in _records(flagged) if r.get("flag")] if flagged else []
        capacity = parameters.get("capacity")
        return charts.line_chart("Events per minute per channel", minutes, series,
                                 ("capacity", int(capacity)) if capacity else None, marks)
    if name == "it_dead_letters_by_reason":
        return charts.bar_chart("Dead letters by connector and reason",
                                [f"{r['connector']}: {r['reason']}" for r in rows[:12]],
                                [("records", [r["records"] for r in rows[:12]])])
    if name == "marketing_campaign_conversion":
        everyone = next((r for r in rows if r["channel_name"] == "all"), rows[-1])
        return charts.bar_chart(f"Campaign {parameters.get('campaign', '')}: visits, then orders (all channels)",
                                ["visits", "orders"], [("events", [everyone["visits"], everyone["orders"]])])
    if name == "purchasing_sku_demand":
        top = rows[:15]
        return charts.bar_chart("Units per SKU before and during the campaign (15 most sold during it)",
                                [r["sku"] for r in top], [("before", [r["units_before"] for r in top]),
                                                         ("during", [r["units_during"] for r in top])])
    if name == "operations_orders_per_hour":
        hours = [charts.text(r["hour"])[11:16] or charts.text(r["hour"]) for r in rows]
        return charts.bar_chart("Orders per hour", hours, [("web orders", [r["web_orders"] for r in rows]),
                                                           ("store receipts", [r["store_receipts"] for r in rows])])
    if name == "finance_promotion_profitability":
        row = rows[0]
        parts = ["revenue", "cost_of_goods", "shipping", "media", "net_margin"]
        return charts.bar_chart(f"Campaign {row['campaign']}: revenue, costs and margin", parts,
                                [("amount", [row[p] for p in parts])])
    if name == "finance_online_vs_store":
        return charts.bar_chart("Revenue online and in store, by kind of customer", [r["customers"] for r in rows],
                                [("online revenue", [r["online_revenue"] for r in rows]),
                                 ("store revenue", [r["store_revenue"] for r in rows])])
    return ""


def render_html(department: str, sections: list[Section], parameters: dict, nav: str = "",
                generated: datetime | None = None) -> str:
    """The department's page; with nav='' a self-contained report (styles inline, no links, no script)."""
    by_name = {section.name: section for section in sections}
    body = [f'<p class="generated">Generated {escape((generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S UTC"))}'
            + "".join(f" · {escape(k)} = {escape(str(v))}" for k, v in sorted(parameters.items())) + "</p>"]
    for section in sections:
        body.append(f'<section class="query" id="{escape(section.name)}" data-query="{escape(section.name)}">'
                    f'<h2>{escape(section.title or section.name)}</h2><p class="query-name">{escape(section.name)}</p>')
        if section.skipped:
            body.append(f'<p class="skipped">Not shown: {escape(section.skipped)}.</p></section>')
            continue
        chart = "" if section.name in HIDDEN else _chart(section, by_name, parameters)
        body.append(chart)
        if section.name != "it_load_by_channel_per_minute":  # a minute a row: the chart says it
            body.append(table(section.columns, section.rows, open_=not chart))
        body.append("</section>")
    return page(DEPARTMENTS.get(department, department), "".join(body), nav)


def render_json(department: str, sections: list[Section], parameters: dict) -> str:
    return json.dumps({"department": department, "title": DEPARTMENTS.get(department, department),
                       "generated_at": datetime.now(timezone.utc).isoformat(), "parameters": parameters,
                       "queries": [{"name": s.name, "title": s.title, "skipped": s.skipped or None, "columns": s.columns,
                                    "rows": [[_json_value(v) for v in row] for row in s.rows]} for s in sections]},
                      indent=1)


def _json_value(value):
    """Counts stay numbers; money, times and the rest as their exact text (JSON numbers would be floats)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return charts.text(value)


def render_csv(section: Section) -> str:
    """One query's rows as CSV (a header, then the rows; money as exact decimal text)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(section.columns)
    for row in section.rows:
        writer.writerow([charts.text(v) if not isinstance(v, list) else json.dumps(v, default=str) for v in row])
    return out.getvalue()
