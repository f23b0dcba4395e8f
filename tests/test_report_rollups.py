"""The reports read rollups (timeline_minutes, customer_activity, sku_minutes, fed once per event through
timeline_facts). Against many events at random times, delivered again and again, and a campaign window whose
edges fall inside minutes, every rollup-based report equals the same figures worked out in Python from the
events themselves."""
from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from infra.clickhouse import open_client
from sinks.clickhouse_sink import TIMELINE_COLUMNS
from sinks.migrate import migrate
from sinks.named_queries import named_query

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
START = datetime(2026, 11, 20, 10, 0, 30, 250_000, tzinfo=timezone.utc)   # edges inside minutes
END = datetime(2026, 11, 20, 11, 15, 45, 500_000, tzinfo=timezone.utc)


def events(count: int, rng: random.Random) -> list[dict]:
    made = []
    for i in range(count):
        when = T0 + timedelta(milliseconds=rng.randrange(3 * 3600 * 1000))
        if rng.random() < 0.1:   # many events right at the window's edges
            when = rng.choice([START, END]) + timedelta(milliseconds=rng.randrange(-30_000, 30_000))
        kind = rng.choice(["web", "store", "app", "support"])
        event = {"event_id": f"E-{i}", "when": when, "channel": kind, "customer": f"C{rng.randrange(40)}",
                 "amount": None, "lines": [], "campaign": "", "shipping": 0}
        if kind in ("web", "store"):
            event["type"] = "order" if kind == "web" else "receipt"
            event["lines"] = [(rng.choice("ABCD"), rng.randrange(1, 4), rng.randrange(100, 10_000), rng.choice([None, 50]))
                              for _ in range(rng.randrange(1, 3))]
            event["amount"] = None if rng.random() < 0.05 else sum(q * p for _, q, p, _ in event["lines"])
            event["campaign"] = "BEST24" if rng.random() < 0.5 else ""
            event["shipping"] = rng.randrange(0, 900) if kind == "web" else 0
        elif kind == "app":
            event["type"] = "session"
            event["campaign"] = "tv-best24" if rng.random() < 0.5 else ""
        else:
            event["type"] = "ticket_update"
            if rng.random() < 0.5:   # naming an order, some not (yet) in the timeline
                event["related"] = f"E-{rng.randrange(count + 20)}"
        made.append(event)
    return made


def as_row(event: dict) -> list:
    payload = {"campaign": event["campaign"], "shipping_cost_minor": event["shipping"]}
    if event.get("related"):
        payload["related_order_id"] = event["related"]
    if event["lines"]:
        payload["lines"] = [{"sku": s, "quantity": q, "unit_price_minor": p, "unit_cost_minor": c} for s, q, p, c in event["lines"]]
    return [event["event_id"], event["when"], event["channel"], event["type"], event["customer"], event["event_id"],
            event["amount"], "EUR" if event["amount"] is not None else None, json.dumps(payload), "fixture", 0, 0]


def run(client, name, **parameters) -> list[dict]:
    result = client.query(named_query(name), parameters=parameters or None)
    return [dict(zip(result.column_names, r)) for r in result.result_rows]


def naive(when: datetime, to: str) -> datetime:
    """A minute or hour as ClickHouse returns a DateTime('UTC'): naive, in UTC."""
    cut = when.replace(second=0, microsecond=0, tzinfo=None)
    return cut.replace(minute=0) if to == "hour" else cut


def cents(value: int) -> Decimal:
    return Decimal(value) / 100


def test_rollup_reports_equal_the_events_worked_out_in_python(settings):
    rng = random.Random(11)
    made = events(1500, rng)
    client = open_client(settings)
    migrate(client)
    client.insert("campaigns", [["tv-best24", "TV", START, END, "best_customers", ["tv"], "BEST24", 100_000, "EUR", 0]],
                  column_names=["campaign_id", "name", "starts_at", "ends_at", "audience_segment", "channels",
                                "discount_code", "media_cost_minor", "currency", "expected_extra_visitors"])
    rows = [as_row(e) for e in made]
    rng.shuffle(rows)
    for chunk in range(0, len(rows), 200):   # the sink's batches, in no time order
        client.insert("timeline_events", rows[chunk:chunk + 200], column_names=TIMELINE_COLUMNS)
    for _ in range(3):   # replayed deliveries, alone and inside batches with themselves twice
        again = rng.sample(rows, 300)
        client.insert("timeline_events", again + again[:50], column_names=TIMELINE_COLUMNS)

    sales = [e for e in made if e["type"] in ("order", "receipt")]
    coded = [e for e in sales if e["campaign"] == "BEST24" and START <= e["when"] < END]

    [profit] = run(client, "finance_promotion_profitability", campaign="tv-best24")
    revenue = sum(e["amount"] or 0 for e in coded)
    cost = sum(q * (c or 0) for e in coded for _, q, _, c in e["lines"])
    shipping = sum(e["shipping"] for e in coded)
    assert (profit["orders"], profit["revenue"], profit["cost_of_goods"], profit["shipping"]) == (
        len(coded), cents(revenue), cents(cost), cents(shipping))
    assert profit["net_margin"] == cents(revenue - cost - shipping - 100_000)

    demand = defaultdict(lambda: [0, 0, 0, 0, 0])
    for e in sales:
        for sku, quantity, price, _ in e["lines"]:
            totals = demand[sku]
            if e["when"] < START:
                totals[0] += quantity
            elif e["when"] < END:
                totals[1] += quantity
                totals[2 if e["channel"] == "web" else 3] += quantity
                totals[4] += quantity * price
    got = {r["sku"]: [r["units_before"], r["units_during"], r["web_units_during"], r["store_units_during"], r["revenue_during"]]
           for r in run(client, "purchasing_sku_demand", campaign="tv-best24")}
    assert got == {sku: t[:4] + [cents(t[4])] for sku, t in demand.items()}

    hours = defaultdict(lambda: [0, 0, 0])
    for e in sales:
        hour = hours[naive(e["when"], "hour")]
        hour[0 if e["channel"] == "web" else 1] += 1
        hour[2] += e["shipping"] if e["channel"] == "web" else 0
    got = {r["hour"]: [r["web_orders"], r["store_receipts"], r["shipping_cost"]] for r in run(client, "operations_orders_per_hour")}
    assert got == {h: [w, s, cents(ship)] for h, (w, s, ship) in hours.items()}

    [everyone] = [r for r in run(client, "marketing_campaign_conversion", campaign="tv-best24") if r["channel_name"] == "all"]
    visits = sum(1 for e in made if e["type"] == "session" and e["campaign"] == "tv-best24")
    all_coded = [e for e in sales if e["campaign"] == "BEST24"]
    assert (everyone["visits"], everyone["orders"], everyone["revenue"]) == (
        visits, len(all_coded), cents(sum(e["amount"] or 0 for e in all_coded)))

    minutes = defaultdict(int)
    for e in made:
        minutes[naive(e["when"], "minute")] += 1
    [kpis] = run(client, "kpis_shared")
    assert (kpis["revenue"], kpis["orders"], kpis["traffic"], kpis["peak_events_per_minute"]) == (
        cents(sum(e["amount"] or 0 for e in sales)), len(sales), sum(1 for e in made if e["type"] == "session"),
        max(minutes.values()))
    assert kpis["buying_customers"] == len({e["customer"] for e in sales})
    load = {(r["minute"], r["channel"]): r["events"] for r in run(client, "it_load_by_channel_per_minute") if r["channel"]}
    per_channel = defaultdict(int)
    for e in made:
        per_channel[(naive(e["when"], "minute"), e["channel"])] += 1
    assert load == dict(per_channel)

    web_orders = {e["event_id"]: e for e in made if e["type"] == "order"}
    expected = sorted((e["when"].replace(tzinfo=None), e["event_id"], e["related"], web_orders[e["related"]]["customer"] == e["customer"])
                      for e in made if e.get("related") in web_orders)
    got = sorted((r["contacted_at"].replace(tzinfo=None), r["contact"], r["order_id"], bool(r["same_customer"]))
                 for r in run(client, "service_tickets_with_orders"))
    assert got == expected and expected

    lag = {r["channel"]: (r["events"], r["mean_lag_seconds_last_hour"]) for r in run(client, "it_ingestion_lag")}
    brute = client.query("""
        SELECT channel, count(), round(avgIf(dateDiff('millisecond', event_time, ingested_at) / 1000,
                                             ingested_at > (SELECT max(ingested_at) FROM timeline_facts) - INTERVAL 1 HOUR), 1)
        FROM timeline_facts FINAL GROUP BY channel""").result_rows
    assert lag == {channel: (n, mean) for channel, n, mean in brute}

    online = defaultdict(lambda: [0, 0])
    for e in sales:
        online[e["customer"]][0 if e["channel"] == "web" else 1] += e["amount"] or 0
    groups = {r["customers"]: (r["how_many"], r["online_revenue"], r["store_revenue"]) for r in run(client, "finance_online_vs_store")}
    assert sum(g[0] for g in groups.values()) == len(online)
    assert sum(g[1] for g in groups.values()) == cents(sum(o for o, _ in online.values()))
    assert groups["bought online and in store"][0] == sum(1 for o, s in online.values() if o > 0 and s > 0)


def test_rollups_cut_short_by_a_kill_are_found_and_rebuilt(settings):
    from sinks.rollups import check_rollups, rollups_disagree

    client = open_client(settings)
    migrate(client)
    made = events(300, random.Random(3))
    client.insert("timeline_events", [as_row(e) for e in made], column_names=TIMELINE_COLUMNS)
    assert rollups_disagree(client) is None
    before = {name: run(client, name) for name in ("kpis_shared", "it_load_by_channel_per_minute", "operations_orders_per_hour")}
    # What a kill -9 between the facts insert and its rollups' leaves: facts there, rollups short.
    client.command("ALTER TABLE sku_minutes DELETE WHERE sku = 'A' SETTINGS mutations_sync = 1")
    client.command("ALTER TABLE timeline_minutes DELETE WHERE channel = 'web' SETTINGS mutations_sync = 1")
    assert "timeline_minutes counts" in rollups_disagree(client) and "sku_minutes" in rollups_disagree(client)
    assert run(client, "kpis_shared") != before["kpis_shared"]
    check_rollups(client)
    assert rollups_disagree(client) is None
    assert repr({name: run(client, name) for name in before}) == repr(before)   # repr: nan (no profiles) equals itself
