"""The generated promotion through the whole hub (every bundled connector, the worker, the sink), checked
against the generator's own files: the shapes of issue 12 (tills without totals, a returns channel added
by config alone as one JSON document, best customers after a load that ends quickly) reach the reports
exactly."""
from __future__ import annotations

import asyncio
import csv
import json
from decimal import Decimal

import pytest

from connectors.config import bundled_configs
from connectors.runtime import run_connector
from connectors.scenario import STORES_WITHOUT_TOTALS, generate
from infra.hub import Hub
from sinks.named_queries import named_query, stored_counts
from tests.fixtures import channel_config
from tests.test_pipeline import wait_for

pytestmark = pytest.mark.integration


def minor(text: str, comma: bool = False) -> int:
    """Exactly, as the connectors read it: '1 234,50' or '1234.50' -> 123450."""
    value = Decimal(text.replace(".", "").replace(",", ".") if comma else text)
    return int(value * 100)


def expected_revenue(out) -> dict[str, int]:
    """Web revenue from the accepted orders' totals, store revenue from the accepted receipts' lines (some
    tills export no total); accepted = named in the ground truth."""
    with (out / "ground_truth.csv").open() as file:
        accepted = {(row["channel"], row["source_id"]) for row in csv.DictReader(file)}
    web = 0
    for line in (out / "web-orders.jsonl").read_text().splitlines():
        try:
            order = json.loads(line)
        except ValueError:
            continue
        if ("web", order.get("order_id")) in accepted:
            web += minor(order["total"])
    store = 0
    with (out / "store-sales.csv").open() as file:
        for row in csv.DictReader(file, delimiter=";"):
            if ("store", f"{row['store_id']}:{row['receipt_id']}") in accepted:
                store += int(row["qty"]) * minor(row["unit_price"], comma=True)
    return {"web": web, "store": store}


def test_the_generated_promotion_reports_exact_revenue_returns_and_best_customers(settings, tmp_path):
    out = tmp_path / "scenario"
    manifest = generate(out, customers=300, events=3000, seed=5)
    settings = settings.model_copy(update={"identity": settings.identity.model_copy(
        update={"best_customer_refresh_seconds": 2.0})})
    accepted = sum(channel["valid"] for channel in manifest["channels"].values())

    async def load() -> dict:
        async with Hub(settings) as hub:
            for path in bundled_configs():
                config = channel_config(settings, tmp_path, path.stem)
                report = await run_connector(settings, hub.bootstrap, config, out / manifest["channels"][path.stem]["file"])
                assert report.reconciles and report.accepted == manifest["channels"][path.stem]["valid"], report.describe()
            await wait_for(lambda: stored_counts(hub.client)[0] >= accepted, 180, f"{accepted} events in ClickHouse", hub)
            # the load ended within seconds: the segment must fill without anyone buying again
            await wait_for(lambda: hub.client.query("SELECT count() FROM customer_profiles FINAL "
                                                    "WHERE best_customer = 1 AND deleted = 0").result_rows[0][0] > 0,
                           60, "best customers in customer_profiles", hub)

            def run(name: str) -> list[dict]:
                result = hub.client.query(named_query(name))
                return [dict(zip(result.column_names, row)) for row in result.result_rows]

            returns = hub.client.query("SELECT count() FROM timeline_events FINAL WHERE channel = 'returns' "
                                       "AND event_type = 'return_request'").result_rows[0][0]
            mixed = hub.client.query("SELECT countIf(amount_minor IS NULL) FROM timeline_events FINAL "
                                     "WHERE event_type = 'receipt'").result_rows[0][0]
            return {"kpis": run("kpis_shared"), "online_vs_store": run("finance_online_vs_store"),
                    "returns": returns, "receipts_without_amount": mixed}

    reports = asyncio.run(load())
    revenue = expected_revenue(out)
    assert STORES_WITHOUT_TOTALS  # the generator did write receipts without totals (tests/test_scenario.py)
    assert reports["receipts_without_amount"] == 0
    [kpis] = reports["kpis"]
    assert kpis["revenue"] == Decimal(revenue["web"] + revenue["store"]) / 100
    by_group = {r["customers"]: r for r in reports["online_vs_store"]}
    assert by_group["bought online and in store"]["how_many"] > 0
    assert sum(r["store_revenue"] for r in by_group.values()) == Decimal(revenue["store"]) / 100
    assert sum(r["online_revenue"] for r in by_group.values()) == Decimal(revenue["web"]) / 100
    assert reports["returns"] == manifest["channels"]["returns"]["valid"] > 0
