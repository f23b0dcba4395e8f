"""Customer 360 for customer service: find a person by what a caller gives (email, phone, loyalty id, social
handle, order number, customer id), then their profile, the merges that made them one customer, and their
whole timeline across channels with amounts."""
from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from console.departments import RunQuery, console_query
from console.layout import Markup, table
from schemas.identifiers import PERSONAL_KINDS, normalize
from sinks.named_queries import named_query

PHONE_LIKE = re.compile(r"^\+?[\d\s().-]{6,}$")
KIND_PREFIX = re.compile(r"^(" + "|".join(PERSONAL_KINDS) + r"):(.+)$")




@dataclass
class Search:
    identifiers: list[str]   # kind:value, as the worker normalises them
    handle: str              # a social handle on any platform
    term: str                # as typed: an order number or a customer id


def search_terms(typed: str, default_region: str, fallback_regions: tuple[str, ...] = ()) -> Search:
    """What a typed text can be, in the forms the hub stores (an email lower-cased, a phone in E.164...)."""
    term = typed.strip()
    forms: list[tuple[str, str, str | None]] = []
    handle = ""
    if match := KIND_PREFIX.match(term):
        kind, value = match.groups()
        platform = None
        if kind == "social_handle":
            platform, _, value = value.rpartition(":")
            platform = platform or None
        forms.append((kind, value, platform))
        if kind == "social_handle" and platform is None:
            handle = value.lstrip("@").lower()
    elif "@" in term.lstrip("@"):
        forms.append(("email", term, None))
    elif PHONE_LIKE.match(term):
        forms.append(("phone", term, None))
    elif term:
        forms += [("loyalty_id", term, None), ("web_account", term, None)]
        handle = term.lstrip("@").lower()
    identifiers = []
    for kind, value, platform in forms:
        try:
            identifiers.append(f"{kind}:{normalize(kind, value, platform, default_region, fallback_regions)}")
        except ValueError:
            continue  # not a valid form of that kind: the other readings still apply
    return Search(identifiers, handle, term)


def find(run_query: RunQuery, search: Search) -> tuple[list[str], list[list]]:
    return run_query(console_query("find_customers"), {"identifiers": search.identifiers or [""],
                                                        "handle": search.handle, "term": search.term})


def search_page(typed: str, columns: list[str], rows: list[list]) -> str:
    form = search_form(typed)
    if not typed.strip():
        return form
    if not rows:
        return form + f'<p class="notice" id="no-match">Nobody is known as {escape(typed)}.</p>'
    listing = table(columns, [[Markup(f'<a href="/customer/{quote(row[0])}">{escape(row[0])}</a>')] + list(row[1:])
                              for row in rows])
    return form + f'<p id="matches">{len(rows)} customer{"s" if len(rows) != 1 else ""} match.</p>' + listing


def search_form(typed: str = "") -> str:
    return ('<form class="search" method="get" action="/customer"><input type="text" name="q" autofocus '
            f'placeholder="email, phone, loyalty id, @handle, order number or customer id" value="{escape(typed)}">'
            ' <button type="submit">Find</button></form>')


def customer_page(run_query: RunQuery, customer_id: str, can_split: bool, notice: str = "") -> str | None:
    """The 360 view, or None when no such current customer exists (merged away, forgotten, unknown)."""
    columns, rows = run_query(console_query("customer_profile"), {"customer": customer_id})
    if not rows:
        return None
    profile = dict(zip(columns, rows[0]))
    identifiers = list(profile.pop("identifiers") or [])
    parts = [search_form(), f'<p class="notice" id="notice">{escape(notice)}</p>' if notice else ""]
    badge = ' <span class="badge">best customer</span>' if profile["segment"] == "best customers" else ""
    parts.append(f'<section class="panel" id="profile"><h2>Customer {escape(customer_id)}{badge}</h2>'
                 + table(["figure", "value"], [[name.replace("_", " "), value] for name, value in profile.items()])
                 + "</section>")
    parts.append('<section class="panel" id="identifiers"><h2>Identifiers</h2><ul>'
                 + "".join(f'<li data-identifier="{escape(i)}">{escape(i)}</li>' for i in identifiers) + "</ul></section>")
    merge_columns, merges = run_query(console_query("customer_merges"), {"customer": customer_id})
    parts.append('<section class="panel" id="merges"><h2>Merges that made them one customer</h2>'
                 + (table(merge_columns, merges) if merges else "<p>None: every event was published under this id.</p>")
                 + "</section>")
    timeline_columns, timeline = run_query(named_query("service_customer_history"), {"customer": customer_id})
    parts.append(f'<section class="panel" id="timeline"><h2>Timeline across channels ({len(timeline)} events)</h2>'
                 + table(timeline_columns, timeline) + "</section>")
    if can_split and identifiers:
        boxes = "".join(f'<label><input type="checkbox" name="identifier" value="{escape(i)}"> {escape(i)}</label><br>'
                        for i in identifiers)
        parts.append(f'<section class="panel" id="split"><h2>Undo a wrong merge</h2><form method="post" '
                     f'action="/customer/{quote(customer_id)}/split"><p>Move these identifiers, and the events they '
                     f'bring, to a new customer that will not be merged back:</p>{boxes}<p><input type="text" '
                     'name="reason" required placeholder="why (kept in identity-warnings)" size="50"> '
                     '<button type="submit">Split</button></p></form></section>')
    return "".join(parts)

