"""Profiles: folding events (in any order), merging, and the published record."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from streams import profiles

T0 = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)


def event(channel, kind, hours, total=None, **extra):
    return {"channel": channel, "event_type": kind, "occurred_at": T0 + timedelta(hours=hours), "total_minor": total,
            "source_id": extra.pop("source_id", f"{channel}-{hours}"), "attributes": extra.pop("attributes", {}), **extra}


EVENTS = [
    event("web", "order", 0, 10_000),
    event("store", "receipt", 30 * 24 + 1, 5_000),           # 30 days later: still a re-purchase within 31 days
    event("support", "ticket_update", 2, status="open", attributes={"ticket_id": "T-1", "contact_channel": "phone"}),
    event("support", "ticket_update", 5, status="solved", attributes={"ticket_id": "T-1", "contact_channel": "phone"}),
    event("social", "social_post", 3, text="Love the TV, thanks!", attributes={"platform": "instagram"}),
    event("social", "social_post", 4, text="Order arrived broken", attributes={"platform": "facebook"}),
]


def fold_all(items):
    p = profiles.empty("c1")
    for item in items:
        p = profiles.fold(p, item)
    return p


def test_order_of_arrival_does_not_change_the_profile():
    in_order, reversed_order = fold_all(EVENTS), fold_all(list(reversed(EVENTS)))
    assert in_order == reversed_order
    record = profiles.to_avro(in_order, ["email:a@x.com"], 3, repurchase_days=31, best_threshold=15_000)
    assert (record["online_orders"], record["online_revenue_minor"], record["store_orders"], record["store_revenue_minor"]) == (1, 10_000, 1, 5_000)
    assert record["average_basket_minor"] == 7_500 and record["repurchased"] and record["best_customer"]
    assert record["open_tickets"] == 0                       # the late "open" update did not reopen T-1
    assert record["last_contact_channel"] == "phone"         # the ticket update at +5h is the latest contact
    assert record["social_mentions"] == 2 and record["sentiment"] == 0.0   # +1 and -1
    assert record["first_seen"] == T0.timestamp() * 1000 and record["last_seen"] == EVENTS[1]["occurred_at"].timestamp() * 1000
    assert not profiles.to_avro(in_order, [], 1, repurchase_days=29, best_threshold=None)["repurchased"]


def test_merging_two_profiles_adds_them_up():
    a, b = fold_all(EVENTS[:2]), fold_all(EVENTS[2:])
    b["customer_id"] = "c2"
    merged = profiles.merge(a, b)
    assert {k: v for k, v in merged.items() if k != "merged_ids"} == {k: v for k, v in fold_all(EVENTS).items() if k != "merged_ids"}
    assert merged["merged_ids"] == ["c2"]


def test_sentiment_is_a_bounded_lexicon_score():
    assert profiles.sentiment("great service, thanks") == 1.0
    assert profiles.sentiment("still waiting, never again") == -1.0
    assert profiles.sentiment("hello") == 0.0
