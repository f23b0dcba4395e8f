"""Money is exact end to end: a million random cent amounts go through the connector, the worker and the
sink, and every report that shows money gives Python's exact sum (issue 12: reports once divided as floats)."""
from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connectors.runtime import run_connector
from infra.hub import Hub
from sinks.named_queries import named_query
from tests.fixtures import channel_config
from tests.test_pipeline import wait_for

pytestmark = pytest.mark.integration

ORDERS = 10_000
LINES_PER_ORDER = 100          # 1,000,000 line prices, and as many costs
WINDOW_START = datetime(2026, 11, 20, 20, 0, tzinfo=timezone.utc)
WINDOW_END = WINDOW_START + timedelta(hours=24)
MEDIA_MINOR = 12_345_678_901


def money(minor: int) -> str:
    """As a shop exports it: '1234.05'."""
    return f"{minor // 100}.{minor % 100:02d}"


def exact(minor: int) -> Decimal:
    return Decimal(minor) / 100


def write_orders(path, seed: int = 12) -> dict:
    """Random orders, half of them with the campaign's code, a tenth of them before its window; returns the
    exact sums every report should show, in minor units."""
    rng = random.Random(seed)
    sums = defaultdict(int)
    per_sku = defaultdict(int)
    with path.open("w") as out:
        for i in range(ORDERS):
            before = i % 10 == 0
            at = WINDOW_START + timedelta(seconds=rng.randrange(-86_400 if before else 0, 0 if before else 86_400))
            coded = i % 2 == 0
            lines = [(f"SKU-{rng.randrange(300)}", rng.randrange(1, 100_000), rng.randrange(0, 60_000))
                     for _ in range(LINES_PER_ORDER)]
            shipping = rng.randrange(0, 2_000)
            total = sum(price for _, price, _ in lines) + shipping
            out.write(json.dumps({
                "order_id": f"W-{i:06d}", "created_at": at.isoformat(), "currency": "EUR",
                "customer": {"email": f"buyer{i % 3_000}@example.com"}, "total": money(total),
                "shipping_cost": money(shipping), "discount_code": "BEST24" if coded else None,
                "lines": [{"sku": sku, "qty": 1, "unit_price": money(price), "unit_cost": money(cost)}
                          for sku, price, cost in lines]}) + "\n")
            sums["revenue"] += total
            sums["shipping"] += shipping
            if not before:
                for sku, price, _ in lines:
                    per_sku[sku] += price
            if coded:
                sums["coded_revenue"] += total
            if coded and not before:
                sums["campaign_revenue"] += total
                sums["campaign_shipping"] += shipping
                sums["campaign_goods"] += sum(cost for _, _, cost in lines)
    return {**sums, "per_sku": dict(per_sku)}


def test_a_million_random_cent_amounts_sum_exactly_in_every_money_report(settings, tmp_path):
    source = tmp_path / "orders.jsonl"
    expected = write_orders(source)
    config = channel_config(settings, tmp_path, "web-orders")

    async def load() -> dict:
        async with Hub(settings) as hub:
            report = await run_connector(settings, hub.bootstrap, config, source)
            assert (report.read, report.accepted) == (ORDERS, ORDERS)
            await wait_for(lambda: hub.client.query("SELECT count() FROM order_lines FINAL").result_rows[0][0]
                           >= ORDERS * LINES_PER_ORDER, 240, "every order line in ClickHouse", hub)
            hub.client.insert("campaigns", [["tv", "TV", WINDOW_START, WINDOW_END, "best_customers", ["tv"], "BEST24",
                                             MEDIA_MINOR, "EUR", 0]],
                              column_names=["campaign_id", "name", "starts_at", "ends_at", "audience_segment", "channels",
                                            "discount_code", "media_cost_minor", "currency", "expected_extra_visitors"])

            def run(name: str, **parameters) -> list[dict]:
                result = hub.client.query(named_query(name), parameters=parameters or None)
                return [dict(zip(result.column_names, row)) for row in result.result_rows]

            return {name: run(name, **parameters) for name, parameters in [
                ("kpis_shared", {}), ("finance_online_vs_store", {}), ("operations_orders_per_hour", {}),
                ("orders", {}), ("finance_promotion_profitability", {"campaign": "tv"}),
                ("marketing_campaign_conversion", {"campaign": "tv"}), ("purchasing_sku_demand", {"campaign": "tv"})]}

    reports = asyncio.run(load())
    [kpis] = reports["kpis_shared"]
    assert kpis["revenue"] == exact(expected["revenue"])
    assert sum(r["online_revenue"] for r in reports["finance_online_vs_store"]) == exact(expected["revenue"])
    assert sum(r["amount"] for r in reports["orders"]) == exact(expected["revenue"])
    assert sum(r["shipping_cost"] for r in reports["operations_orders_per_hour"]) == exact(expected["shipping"])
    [profit] = reports["finance_promotion_profitability"]
    assert (profit["revenue"], profit["cost_of_goods"], profit["shipping"], profit["media"], profit["net_margin"]) == (
        exact(expected["campaign_revenue"]), exact(expected["campaign_goods"]), exact(expected["campaign_shipping"]),
        exact(MEDIA_MINOR), exact(expected["campaign_revenue"] - expected["campaign_goods"]
                                  - expected["campaign_shipping"] - MEDIA_MINOR))
    conversion = {r["channel_name"]: r["revenue"] for r in reports["marketing_campaign_conversion"]}
    assert conversion["all"] == conversion["web"] == exact(expected["coded_revenue"])  # any time, with the code
    demand = {r["sku"]: r["revenue_during"] for r in reports["purchasing_sku_demand"]}
    assert demand == {sku: exact(minor) for sku, minor in expected["per_sku"].items()}
