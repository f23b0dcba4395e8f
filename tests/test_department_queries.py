"""Department queries (sinks/sql/queries) on the real ClickHouse engine, against a small fixture whose
numbers are worked out by hand in the comments."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from infra.clickhouse import open_client
from sinks.clickhouse_sink import EVENT_DETAIL_COLUMNS, IDENTITY_MAP_COLUMNS, TIMELINE_COLUMNS, split_personal
from sinks.migrate import migrate
from sinks.named_queries import named_query

pytestmark = pytest.mark.integration


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc)


def line(sku, quantity, price, cost):
    return {"sku": sku, "quantity": quantity, "unit_price_minor": price, "unit_cost_minor": cost}


def row(event_id, when, channel, event_type, customer, amount, payload):
    return [event_id, when, channel, event_type, customer, event_id, amount, "EUR" if amount else None,
            json.dumps(payload), "fixture", 0, 0]


FIXTURE = [
    # before the campaign: A x1 at 100.00 (cost 60.00), shipping 5.00
    row("W-1", at(19, 10), "web", "order", "C1", 10_000, {"lines": [line("A", 1, 10_000, 6_000)], "shipping_cost_minor": 500}),
    # during, with the code: A x2 at 100.00 (cost 2 x 60.00), paid 170.00, shipping 10.00
    row("W-2", at(20, 20, 50), "web", "order", "C1", 17_000,
        {"lines": [line("A", 2, 10_000, 6_000)], "shipping_cost_minor": 1_000, "campaign": "BEST24"}),
    # during, in store, no code: B x5 at 10.00 (cost 4.00)
    row("R-1", at(20, 21, 10), "store", "receipt", "C2", 5_000, {"lines": [line("B", 5, 1_000, 400)]}),
    # during, with the code: B x1 at 10.00 (cost 4.00) + C x1 at 80.00 (cost 50.00), paid 90.00, shipping 7.00
    row("W-3", at(20, 21, 30), "web", "order", "C2", 9_000,
        {"lines": [line("B", 1, 1_000, 400), line("C", 1, 8_000, 5_000)], "shipping_cost_minor": 700, "campaign": "BEST24"}),
    row("T-1", at(20, 22), "support", "ticket_update", "C1", None,
        {"status": "open", "related_order_id": "W-2", "text": "Call me on +33612345678 or at alice@x.com",
         "attributes": {"ticket_id": "T-1", "contact_channel": "phone"}}),
    row("T-2", at(20, 22, 30), "support", "ticket_update", "C2", None,
        {"status": "open", "related_order_id": "W-3", "attributes": {"ticket_id": "T-2", "contact_channel": "facebook"}}),
    # app sessions: two tagged with the campaign, three in one minute the day before (a spike nobody announced)
    row("S-1", at(20, 20, 46), "app", "session", "C1", None, {"campaign": "tv-best24"}),
    row("S-2", at(20, 20, 47), "app", "session", "A9", None, {"campaign": "tv-best24"}),
    row("S-3", at(19, 10), "app", "session", "A8", None, {}),
    row("S-4", at(19, 10), "app", "session", "A7", None, {}),
    row("S-5", at(19, 10), "app", "session", "A6", None, {}),
]
PROFILE_COLUMNS = ["customer_id", "events", "online_orders", "store_orders", "repurchased", "best_customer", "deleted", "updated_at"]
PROFILES = [["C1", 9, 3, 1, 1, 1, 0, at(21, 0)], ["C3", 1, 1, 0, 0, 1, 0, at(21, 0)], ["C2", 0, 0, 0, 0, 0, 1, at(21, 0)]]


@pytest.fixture
def client(settings):
    client = open_client(settings)
    migrate(client)
    store_events(client, FIXTURE)
    store_events(client, FIXTURE[1:2])  # a redelivery changes nothing
    client.insert("campaigns", [["tv-best24", "TV promotion", at(20, 0), at(21, 0), "best_customers", ["tv", "web"],
                                 "BEST24", 100_000, "EUR", 5000]],
                  column_names=["campaign_id", "name", "starts_at", "ends_at", "audience_segment", "channels",
                                "discount_code", "media_cost_minor", "currency", "expected_extra_visitors"])
    client.insert("customer_profiles", PROFILES, column_names=PROFILE_COLUMNS)
    # C2 turned out to be C1
    client.insert("identity_map", [["C2", "C1", 1, "e", hashlib.sha256(b"email:x").hexdigest()]],
                  column_names=IDENTITY_MAP_COLUMNS)
    return client


def store_events(client, rows) -> None:
    """As the sink stores them: free text and attributes apart, in event_details."""
    events, details = [], []
    for row in rows:
        payload_json, text, attributes = split_personal(row[8])
        events.append(row[:8] + [payload_json] + row[9:])
        if text is not None or attributes is not None:
            details.append([row[0], row[4], row[1], row[2], text or "", json.dumps(attributes or {})])
    client.insert("timeline_events", events, column_names=TIMELINE_COLUMNS)
    client.insert("event_details", details, column_names=EVENT_DETAIL_COLUMNS)


def run(client, name, **parameters):
    result = client.query(named_query(name), parameters=parameters or None)
    return [dict(zip(result.column_names, r)) for r in result.result_rows]


def test_purchasing_demand_per_sku_before_and_during_the_campaign(client):
    rows = run(client, "purchasing_sku_demand", campaign="tv-best24")
    got = {r["sku"]: (r["units_before"], r["units_during"], r["web_units_during"], r["store_units_during"], r["revenue_during"])
           for r in rows}
    assert got == {"A": (1, 2, 2, 0, Decimal("200.00")),     # W-1 before; W-2 x2
                   "B": (0, 6, 1, 5, Decimal("60.00")),      # R-1 x5 in store + W-3 x1 online
                   "C": (0, 1, 1, 0, Decimal("80.00"))}
    assert [r["sku"] for r in rows] == ["B", "A", "C"]


def test_operations_orders_per_hour_and_shipping_cost_per_order(client):
    rows = run(client, "operations_orders_per_hour")
    got = [(r["hour"].strftime("%d %H"), r["web_orders"], r["store_receipts"], r["shipping_cost"], r["shipping_cost_per_order"])
           for r in rows]
    assert got == [("19 10", 1, 0, Decimal("5.00"), Decimal("5.00")),
                   ("20 20", 1, 0, Decimal("10.00"), Decimal("10.00")),
                   ("20 21", 1, 1, Decimal("7.00"), Decimal("7.00"))]


def test_finance_promotion_profitability(client):
    [r] = run(client, "finance_promotion_profitability", campaign="tv-best24")
    # W-2 + W-3: revenue 170 + 90; goods 2x60 + 4 + 50; shipping 10 + 7; media 1000
    assert (r["orders"], r["revenue"], r["cost_of_goods"], r["shipping"], r["media"], r["net_margin"]) == \
        (2, Decimal("260.00"), Decimal("174.00"), Decimal("17.00"), Decimal("1000.00"), Decimal("-931.00"))


def test_service_sees_the_whole_history_under_any_id_the_customer_had(client):
    for customer in ("C1", "C2"):
        rows = run(client, "service_customer_history", customer=customer)
        assert [r["source_id"] for r in rows] == ["W-1", "S-1", "W-2", "R-1", "W-3", "T-1", "T-2"]
    ticket = rows[-2]
    assert (ticket["status"], ticket["related_order"], ticket["text"]) == ("open", "W-2", "Call me on +33612345678 or at alice@x.com")


def test_named_queries_declare_their_parameters_and_say_what_they_answer():
    from sinks.named_queries import query_names, query_parameters, query_title

    names = query_names()
    assert {"purchasing_sku_demand", "finance_promotion_profitability", "service_customer_history"} <= set(names)
    assert query_parameters("finance_promotion_profitability") == {"campaign"}
    assert query_parameters("service_customer_history") == {"customer"}
    assert all(query_title(name) for name in names)


def test_marketing_conversion_segment_reach_and_repurchase(client):
    rows = run(client, "marketing_campaign_conversion", campaign="tv-best24")
    assert [(r["channel_name"], r["visits"], r["orders"], r["revenue"], r["conversion_rate"]) for r in rows] == [
        ("all", 2, 2, Decimal("260.00"), 1.0), ("app", 2, 0, Decimal("0.00"), 0.0), ("web", 0, 2, Decimal("260.00"), None)]
    [r] = run(client, "marketing_best_customers", campaign="tv-best24")
    # best: C1 and C3 (C2 deleted); reached: C1 (its own and C2's code orders, a tagged visit)
    assert (r["best_customers"], r["best_customers_reached"], r["reach_rate"], r["repurchase_rate"]) == (2, 1, 0.5, 0.5)


def test_it_flags_a_spike_nobody_announced_and_load_over_capacity(client):
    rows = run(client, "it_load_per_minute", capacity=10)
    assert [(r["minute"].strftime("%d %H:%M"), r["events"], r["per_channel"], r["campaigns_active"], r["flag"]) for r in rows] == [
        ("19 10:00", 4, "app:3 web:1", [], "spike without an announced campaign")]
    # the campaign promises 5,000 extra visitors over 1,440 minutes on top of a typical minute of 1 event
    [campaign] = run(client, "it_campaign_capacity", capacity=4)
    assert (campaign["expected_per_minute"], campaign["flag"]) == (4.5, "expected load over capacity")
    assert run(client, "it_campaign_capacity", capacity=5)[0]["flag"] == ""
    over = run(client, "it_load_per_minute", capacity=1)
    assert [r["flag"] for r in over] == ["over capacity"]
    lag = {r["channel"]: r for r in run(client, "it_ingestion_lag")}
    assert lag["web"]["events"] == 3 and lag["web"]["newest_event"] == at(20, 21, 30).replace(tzinfo=None)


def test_service_sees_contacts_across_channels_and_tickets_about_orders(client):
    [r] = run(client, "service_multichannel_contacts")
    assert (r["customer_id"], r["contact_channels"], r["tickets"]) == ("C1", ["facebook", "phone"], 2)
    rows = run(client, "service_tickets_with_orders")
    assert [(r["contact"], r["order_id"], r["order_amount"], r["same_customer"]) for r in rows] == [
        ("T-1", "W-2", Decimal("170.00"), True), ("T-2", "W-3", Decimal("90.00"), True)]


def test_finance_online_vs_store_and_the_shared_kpis(client):
    [r] = run(client, "finance_online_vs_store")
    assert (r["customers"], r["how_many"], r["online_revenue"], r["store_revenue"]) == \
        ("bought online and in store", 1, Decimal("360.00"), Decimal("50.00"))  # C1 with C2's purchases
    [k] = run(client, "kpis_shared")
    assert (k["revenue"], k["orders"], k["traffic"], k["conversion_rate"], k["buying_customers"], k["repurchase_rate"],
            k["peak_events_per_minute"]) == (Decimal("410.00"), 4, 5, 0.6, 1, 0.5, 4)


def test_sales_and_contacts_that_name_nobody_count_as_revenue_not_as_customers(client):
    """An event that names nobody is published with customer id '' (streams/identity.py ANONYMOUS): its money
    counts, and it is nobody, not one customer (all of them together) nor a customer each."""
    store_events(client, [
        row("R-8", at(20, 21, 40), "store", "receipt", "", 3_000, {"lines": [line("B", 3, 1_000, 400)]}),
        row("R-9", at(20, 21, 41), "store", "receipt", "", 2_000, {"lines": [line("B", 2, 1_000, 400)]}),
        row("T-8", at(20, 22), "support", "ticket_update", "", None, {"attributes": {"ticket_id": "T-8", "contact_channel": "phone"}}),
        row("T-9", at(20, 22), "support", "ticket_update", "", None, {"attributes": {"ticket_id": "T-9", "contact_channel": "email"}}),
    ])
    [k] = run(client, "kpis_shared")
    assert (k["revenue"], k["orders"], k["buying_customers"]) == (Decimal("460.00"), 6, 1)   # 410 + 30 + 20; still C1 alone
    groups = {r["customers"]: (r["how_many"], r["online_revenue"], r["store_revenue"]) for r in run(client, "finance_online_vs_store")}
    assert groups == {"bought online and in store": (1, Decimal("360.00"), Decimal("50.00")),
                      "no known customer": (0, Decimal("0.00"), Decimal("50.00"))}
    assert [r["customer_id"] for r in run(client, "service_multichannel_contacts")] == ["C1"]


def test_no_view_outside_customer_service_returns_personal_data(client):
    """Identifiers live in customer_identities, read only by customer service: every other department's
    query, run on the fixture plus personal data, returns no email, phone or handle."""
    import re

    from sinks.named_queries import query_names

    client.insert("customer_identities", [["C1", ["email:alice@x.com", "phone:+33612345678", "social_handle:facebook:al"], 0, at(21, 0)]],
                  column_names=["customer_id", "identifiers", "deleted", "updated_at"])
    personal = re.compile(r"@|\+33\d|social_handle|alice")
    parameters = {"campaign": "tv-best24", "capacity": 10, "customer": "C1"}
    for name in query_names():
        if name.startswith("service_") or "_" not in name:
            continue
        result = client.query(named_query(name), parameters={k: v for k, v in parameters.items() if k in named_query(name)})
        assert not personal.search(repr(result.result_rows)), name


def granted_tables(database: str = "omnihub") -> dict[str, dict[str, str]]:
    """role -> {table: the columns it may select, or "*"}, from sinks/sql/access/roles.sql."""
    import re

    from sinks.migrate import role_statements

    grants: dict[str, dict[str, str]] = {}
    for statement in role_statements(database):
        match = re.fullmatch(rf"GRANT SELECT(?:\((.+?)\))? ON {database}\.(\w+) TO (.+)", statement)
        if match:
            for role in match.group(3).split(", "):
                grants.setdefault(role, {})[match.group(2)] = match.group(1) or "*"
    return grants


def test_no_table_outside_customer_service_holds_personal_data(client):
    """Everything a non-service role may read, read whole after personal data came in through every
    door (identifiers, a ticket's text, a merge's identifier, a dead-lettered raw record): no email or phone."""
    import re

    client.insert("customer_identities", [["C1", ["email:alice@x.com", "phone:+33612345678"], 0, at(21, 0)]],
                  column_names=["customer_id", "identifiers", "deleted", "updated_at"])
    client.insert("dead_letters", [["connector:web-orders", "orders.jsonl", "line 7", "amount: not a number",
                                    '{"email": "alice@x.com", "phone": "+33612345678"}', at(21, 0)]],
                  column_names=["component", "source", "position", "error", "raw", "rejected_at"])
    personal = re.compile(r"@|\+33\d|alice")
    grants = granted_tables()
    service_only = set(grants["omnihub_service"]) - {t for role, tables in grants.items() if role != "omnihub_service" for t in tables}
    assert {"customer_identities", "event_details"} <= service_only
    assert personal.search(repr(client.query("SELECT * FROM event_details").result_rows))  # the data is there...
    for role, tables in grants.items():
        if role == "omnihub_service":
            continue
        for table, columns in tables.items():
            rows = client.query(f"SELECT {columns} FROM {table}").result_rows
            assert rows and not personal.search(repr(rows)), (role, table)  # ...but not where they may look


def test_each_department_s_queries_read_only_what_its_role_is_granted():
    import re

    from sinks.named_queries import query_names

    grants = granted_tables()
    tables = {t for granted in grants.values() for t in granted}
    roles = {"marketing": ["omnihub_marketing"], "it": ["omnihub_it"], "purchasing": ["omnihub_purchasing"],
             "operations": ["omnihub_operations"], "service": ["omnihub_service"], "finance": ["omnihub_finance"],
             "kpis": list(grants)}
    checked = 0
    for name in query_names():
        department = name.split("_", 1)[0]
        if department not in roles:
            continue
        used = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", named_query(name))) & tables
        assert used, name
        for role in roles[department]:
            assert used <= set(grants[role]), (name, role, used - set(grants[role]))
        checked += 1
    assert checked >= 12


def test_only_customer_service_may_read_personal_data(settings, backend):
    """The role SQL grants customer_identities to the service role alone; on a ClickHouse server (not
    chDB, which has no access control) a marketing user is refused it."""
    from sinks.migrate import role_statements

    grants = [s for s in role_statements("omnihub") if s.startswith("GRANT")]
    identity_grants = [s for s in grants if ".customer_identities " in s]
    assert identity_grants == ["GRANT SELECT ON omnihub.customer_identities TO omnihub_service"]
    assert all("omnihub_marketing" not in s for s in identity_grants)
    if backend != "containers":
        pytest.skip("access control needs a ClickHouse server; chDB has none")
    client = open_client(settings)
    migrate(client)
    database = settings.clickhouse.database
    for statement in role_statements(database):
        client.command(statement)
    client.command("CREATE USER IF NOT EXISTS test_marketer IDENTIFIED WITH plaintext_password BY 'pw'")
    client.command("GRANT omnihub_marketing TO test_marketer")
    client.command("SET DEFAULT ROLE omnihub_marketing TO test_marketer")
    import clickhouse_connect

    marketer = clickhouse_connect.get_client(dsn=settings.clickhouse.url, username="test_marketer", password="pw")
    marketer.query(f"SELECT count() FROM {database}.timeline_events")
    with pytest.raises(Exception, match="ACCESS_DENIED|Not enough privileges"):
        marketer.query(f"SELECT * FROM {database}.customer_identities")
