"""Charts as inline SVG, drawn on the server: a page or a mailed report needs no script, no CDN, nothing
but the file. Every drawn value carries its exact text (data-value, and a <title> a browser shows on hover),
so what a chart says can be checked against the query it came from; floats are used for pixels only.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from html import escape

WIDTH, HEIGHT = 860, 280
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 20, 70
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
PALETTE = ["#2f6db5", "#e07b39", "#3a9a5b", "#b5453a", "#7d5bb5", "#8c6d31", "#c2508f", "#5f7f8f"]


def text(value) -> str:
    """A value as the page prints it: exact, no float formatting."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")  # to the second, as the JSON path prints it
    if isinstance(value, str) and ISO_TIME.match(value):  # a time as the query endpoint's JSON carries it
        return value[:10] + " " + value[11:19]
    return str(value)


def _number(value) -> float:
    return float(value) if value is not None else 0.0


def _scale(maximum: float) -> float:
    """A round top for the axis."""
    if maximum <= 0:
        return 1.0
    step = 10 ** (len(str(int(maximum))) - 1)
    return (int(maximum / step) + 1) * step


def _axis(top_value: float, plot_height: float) -> str:
    parts = []
    for i in range(5):
        value = top_value * i / 4
        y = TOP + plot_height - plot_height * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{value:,.0f}</text>')
    return "".join(parts)


def _legend(names: list[str]) -> str:
    return "".join(f'<g class="legend"><rect x="{LEFT + i * 110}" y="{HEIGHT - 18}" width="12" height="12" '
                   f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{LEFT + i * 110 + 16}" y="{HEIGHT - 8}">'
                   f'{escape(name)}</text></g>' for i, name in enumerate(names))


def bar_chart(title: str, categories: list[str], series: list[tuple[str, list]],
              reference: tuple[str, object] | None = None) -> str:
    """Grouped bars: one group per category, one bar per series. Negative values (a loss) hang below zero."""
    values = [_number(v) for _, vs in series for v in vs] + ([_number(reference[1])] if reference else [])
    top_value = _scale(max([abs(v) for v in values] + [0]))
    has_negative = any(v < 0 for v in values)
    plot_height = HEIGHT - TOP - BOTTOM
    zero = TOP + (plot_height / 2 if has_negative else plot_height)
    unit = (plot_height / 2 if has_negative else plot_height) / top_value
    group = (WIDTH - LEFT - RIGHT) / max(len(categories), 1)
    bar = max(min(group * 0.8 / max(len(series), 1), 60), 1)
    parts = [f'<svg class="chart bar-chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'xmlns="http://www.w3.org/2000/svg">', f'<title>{escape(title)}</title>',
             _axis(top_value, plot_height / 2 if has_negative else plot_height)]
    label_every = max(1, len(categories) // 24)
    for c, category in enumerate(categories):
        x0 = LEFT + c * group + (group - bar * len(series)) / 2
        for s, (name, vs) in enumerate(series):
            value = vs[c]
            height = abs(_number(value)) * unit
            y = zero - height if _number(value) >= 0 else zero
            parts.append(f'<rect class="bar" x="{x0 + s * bar:.1f}" y="{y:.1f}" width="{bar * 0.92:.1f}" '
                         f'height="{height:.1f}" fill="{PALETTE[s % len(PALETTE)]}" data-series="{escape(name)}" '
                         f'data-category="{escape(category)}" data-value="{escape(text(value))}">'
                         f'<title>{escape(category)} · {escape(name)}: {escape(text(value))}</title></rect>')
            if len(categories) * len(series) <= 12:
                label_y = y - 4 if _number(value) >= 0 else y + height + 12
                parts.append(f'<text class="value" x="{x0 + s * bar + bar / 2:.1f}" y="{label_y:.1f}" '
                             f'text-anchor="middle">{escape(text(value))}</text>')
        if c % label_every == 0:
            parts.append(f'<text class="category" x="{LEFT + c * group + group / 2:.1f}" y="{TOP + plot_height + 16}" '
                         f'text-anchor="middle">{escape(category[:18])}</text>')
    if reference is not None:
        y = zero - _number(reference[1]) * unit
        parts.append(f'<line class="reference" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'data-value="{escape(text(reference[1]))}"/><text class="reference-label" x="{WIDTH - RIGHT}" '
                     f'y="{y - 4:.1f}" text-anchor="end">{escape(reference[0])} {escape(text(reference[1]))}</text>')
    if len(series) > 1:
        parts.append(_legend([name for name, _ in series]))
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, xs: list[str], series: list[tuple[str, list]], reference: tuple[str, object] | None = None,
               marks: list[tuple[str, str]] = ()) -> str:
    """One line per series over xs (minutes, hours); a dashed reference line (capacity); marks: (x, why) drawn
    as red triangles above the busiest line at that x."""
    values = [_number(v) for _, vs in series for v in vs] + ([_number(reference[1])] if reference else [])
    top_value = _scale(max(values + [0]))
    plot_height = HEIGHT - TOP - BOTTOM
    unit = plot_height / top_value
    step = (WIDTH - LEFT - RIGHT) / max(len(xs) - 1, 1)
    position = {x: i for i, x in enumerate(xs)}
    parts = [f'<svg class="chart line-chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'xmlns="http://www.w3.org/2000/svg">', f'<title>{escape(title)}</title>', _axis(top_value, plot_height)]
    for s, (name, vs) in enumerate(series):
        points = " ".join(f"{LEFT + i * step:.1f},{TOP + plot_height - _number(v) * unit:.1f}" for i, v in enumerate(vs))
        data = json.dumps([[x, text(v)] for x, v in zip(xs, vs)])
        parts.append(f'<polyline class="series" fill="none" stroke="{PALETTE[s % len(PALETTE)]}" stroke-width="1.5" '
                     f'points="{points}" data-series="{escape(name)}" data-points="{escape(data)}">'
                     f'<title>{escape(name)}</title></polyline>')
    if reference is not None:
        y = TOP + plot_height - _number(reference[1]) * unit
        parts.append(f'<line class="reference" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'data-value="{escape(text(reference[1]))}"/><text class="reference-label" x="{WIDTH - RIGHT}" '
                     f'y="{y - 4:.1f}" text-anchor="end">{escape(reference[0])} {escape(text(reference[1]))}</text>')
    for x, why in marks:
        if x not in position:
            continue
        i = position[x]
        peak = max((_number(vs[i]) for _, vs in series), default=0)
        cx, cy = LEFT + i * step, TOP + plot_height - peak * unit - 6
        parts.append(f'<path class="mark" d="M{cx - 5:.1f},{cy - 9:.1f} L{cx + 5:.1f},{cy - 9:.1f} L{cx:.1f},{cy:.1f} Z" '
                     f'data-x="{escape(x)}" data-why="{escape(why)}"><title>{escape(x)}: {escape(why)}</title></path>')
    label_every = max(1, len(xs) // 8)
    for i, x in enumerate(xs):
        if i % label_every == 0:
            parts.append(f'<text class="category" x="{LEFT + i * step:.1f}" y="{TOP + plot_height + 16}" '
                         f'text-anchor="middle">{escape(x[5:16] if len(x) >= 16 else x)}</text>')
    parts.append(_legend([name for name, _ in series]))
    parts.append("</svg>")
    return "".join(parts)


def tiles(columns: list[str], row: list) -> str:
    """Key figures, one tile each."""
    return '<div class="tiles">' + "".join(
        f'<div class="tile" data-name="{escape(c)}" data-value="{escape(text(v))}"><div class="tile-value">'
        f'{escape(text(v)) or "—"}</div><div class="tile-name">{escape(c.replace("_", " "))}</div></div>'
        for c, v in zip(columns, row)) + "</div>"
