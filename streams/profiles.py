"""Customer profiles: pure functions folding channel events into a 360 view, and merging two views.

A profile is plain JSON (stored in a Faust table, published on customer-profiles). Folding is
order-independent where it matters (first/last seen are min/max, re-purchase looks at all order
times), so events arriving late land in the right place.
"""
from __future__ import annotations

import re
from bisect import bisect_left, insort
from operator import itemgetter

READS_PERSONAL = ("support", "social")   # channels whose text and attributes fold() reads (tickets, contacts, sentiment)
MAX_ORDERS = 200   # kept per profile for re-purchase and 12-month revenue; bounded so a profile stays small
YEAR_MS = 365 * 86_400_000
DAY_MS = 86_400_000
POSITIVE = {"love", "great", "thanks", "thank", "best", "quick", "perfect", "happy", "excellent"}
NEGATIVE = {"broken", "waiting", "crash", "crashing", "late", "never", "damaged", "worst", "refund", "angry", "not"}
WORD = re.compile(r"[a-zà-ÿ']+")


def sentiment(text: str) -> float:
    """A deliberately simple lexicon score in -1..1: (positive - negative) / words that carry sentiment."""
    words = WORD.findall(text.lower())
    positive = sum(w in POSITIVE for w in words)
    negative = sum(w in NEGATIVE for w in words)
    return 0.0 if positive + negative == 0 else (positive - negative) / (positive + negative)


def empty(customer_id: str) -> dict:
    return {"customer_id": customer_id, "first_seen": None, "last_seen": None, "events": 0,
            "online_orders": 0, "online_revenue_minor": 0, "store_orders": 0, "store_revenue_minor": 0,
            "orders": [], "tickets": {}, "last_contact": None, "social_mentions": 0,
            "sentiment_sum": 0.0, "sentiment_count": 0, "merged_ids": []}


def millis(moment) -> int:
    return moment if isinstance(moment, int) else int(moment.timestamp() * 1000)


def fold(profile: dict, event: dict) -> dict:
    """The profile with one more event (a new dict)."""
    p = dict(profile)
    at = millis(event["occurred_at"])
    p["first_seen"] = at if p["first_seen"] is None else min(p["first_seen"], at)
    p["last_seen"] = at if p["last_seen"] is None else max(p["last_seen"], at)
    p["events"] += 1
    channel, kind = event["channel"], event["event_type"]
    if kind in ("order", "receipt"):
        amount = event.get("total_minor") or 0
        if channel == "store":
            p["store_orders"] += 1
            p["store_revenue_minor"] += amount
        else:
            p["online_orders"] += 1
            p["online_revenue_minor"] += amount
        orders = list(p["orders"])
        insort(orders, [at, amount])
        p["orders"] = orders[-MAX_ORDERS:]
    if channel == "support":
        tickets = dict(p["tickets"])
        ticket = event.get("attributes", {}).get("ticket_id") or event["source_id"].split(":")[0]
        previous = tickets.get(ticket)
        if previous is None or previous[0] <= at:  # a late, older update does not reopen a solved ticket
            tickets[ticket] = [at, event.get("status") or "open"]
        p["tickets"] = tickets
    if channel in ("support", "social"):
        contact = event.get("attributes", {}).get("contact_channel") or event.get("attributes", {}).get("platform") or channel
        if p["last_contact"] is None or p["last_contact"][0] <= at:
            p["last_contact"] = [at, contact]
    if channel == "social":
        p["social_mentions"] += 1
        if event.get("text"):
            p["sentiment_sum"] += sentiment(event["text"])
            p["sentiment_count"] += 1
    return p


def merge(survivor: dict, absorbed: dict) -> dict:
    """One profile for two customers found to be one person."""
    p = dict(survivor)
    for name in ("events", "online_orders", "online_revenue_minor", "store_orders", "store_revenue_minor",
                 "social_mentions", "sentiment_sum", "sentiment_count"):
        p[name] = survivor[name] + absorbed[name]
    seen = [v for v in (survivor["first_seen"], absorbed["first_seen"]) if v is not None]
    p["first_seen"] = min(seen) if seen else None
    seen = [v for v in (survivor["last_seen"], absorbed["last_seen"]) if v is not None]
    p["last_seen"] = max(seen) if seen else None
    p["orders"] = sorted(survivor["orders"] + absorbed["orders"])[-MAX_ORDERS:]
    tickets = dict(absorbed["tickets"])
    for ticket, state in survivor["tickets"].items():
        if ticket not in tickets or tickets[ticket][0] <= state[0]:
            tickets[ticket] = state
    p["tickets"] = tickets
    contacts = [c for c in (survivor["last_contact"], absorbed["last_contact"]) if c is not None]
    p["last_contact"] = max(contacts) if contacts else None
    p["merged_ids"] = sorted(set(survivor["merged_ids"]) | set(absorbed["merged_ids"]) | {absorbed["customer_id"]})
    return p


def revenue(profile: dict) -> int:
    return profile["online_revenue_minor"] + profile["store_revenue_minor"]


def revenue_12_months(profile: dict) -> int:
    """Revenue of the orders in the 12 months up to the customer's last activity."""
    if not profile["orders"] or profile["last_seen"] is None:
        return 0
    orders = profile["orders"]  # sorted by time: only the last year's tail is read
    return sum(map(itemgetter(1), orders[bisect_left(orders, [profile["last_seen"] - YEAR_MS]):]))


def repurchased(profile: dict, within_days: int) -> bool:
    window = within_days * DAY_MS
    orders = profile["orders"]
    return any(orders[i + 1][0] - orders[i][0] <= window for i in range(len(orders) - 1))


def to_avro(profile: dict, identifiers: list[str], version: int, repurchase_days: int, best_threshold: int | None,
            yearly: int | None = None) -> dict:
    """The record for schemas/avro/customer_profile.avsc (yearly: revenue_12_months(profile), if the caller
    has it already)."""
    orders = profile["online_orders"] + profile["store_orders"]
    total = revenue(profile)
    yearly = revenue_12_months(profile) if yearly is None else yearly
    return {
        "customer_id": profile["customer_id"], "version": version, "identifiers": identifiers,
        "merged_ids": profile["merged_ids"], "first_seen": profile["first_seen"], "last_seen": profile["last_seen"],
        "events": profile["events"], "online_orders": profile["online_orders"],
        "online_revenue_minor": profile["online_revenue_minor"], "store_orders": profile["store_orders"],
        "store_revenue_minor": profile["store_revenue_minor"], "average_basket_minor": total // orders if orders else 0,
        "repurchased": repurchased(profile, repurchase_days),
        "open_tickets": sum(1 for _, status in profile["tickets"].values() if status in ("open", "pending")),
        "last_contact_channel": profile["last_contact"][1] if profile["last_contact"] else None,
        "social_mentions": profile["social_mentions"],
        "sentiment": profile["sentiment_sum"] / profile["sentiment_count"] if profile["sentiment_count"] else None,
        "best_customer": best_threshold is not None and yearly > 0 and yearly >= best_threshold,
    }
