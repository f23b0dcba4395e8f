"""The console as people see it: pages in a real headless Chromium (Debian's, driven by Playwright), against a
running hub with the generated promotion loaded. Screenshots go to tests/output/screenshots (or
$OMNIHUB_SCREENSHOTS) for people to look at."""
from __future__ import annotations

import csv
import json
import os
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from infra.cli import cli
from infra.hub import child_environment
from sinks.named_queries import named_query
from tests.test_pipeline import wait_for

CHROMIUM = Path(os.environ.get("OMNIHUB_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("OMNIHUB_SCREENSHOTS", Path(__file__).parent / "output" / "screenshots"))
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: install Debian's chromium "
                                 "(.ci/run does: apt-get install chromium) to run the console's browser tests")]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
# Flags for a closed network: without the background ones Chromium keeps dialling Google's hosts.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def shown(value) -> str:
    """A value as a person reads it on the page: exact decimals, times to the second."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def rows_of(running, name: str, **parameters) -> list[dict]:
    result = running.hub.client.query(named_query(name), parameters=parameters)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def log_in(page, running, target: str = "/") -> None:
    page.goto(running.hub.console.address + "/login?next=" + target)
    page.fill("input[name=token]", running.service_token)
    page.click("#login button")
    page.wait_for_load_state()


def bars(page, query: str) -> list[tuple[str, str, str]]:
    return page.eval_on_selector_all(f'section[data-query="{query}"] rect.bar',
                                     "els => els.map(e => [e.dataset.series, e.dataset.category, e.dataset.value])")


def campaign_of(running) -> str:
    return running.hub.client.query("SELECT campaign_id FROM campaigns FINAL ORDER BY starts_at DESC, campaign_id "
                                    "LIMIT 1").result_rows[0][0]


def test_service_pages_are_refused_without_the_service_token(page, loaded_hub):
    console = loaded_hub.hub.console.address
    for path in ("/customer", "/department/service", "/customer?q=someone%40example.com"):
        response = page.goto(console + path)
        assert response.status == 403 and "needs the service role" in page.inner_text("#refused")
    shot(page, "service-refused")
    page.fill("input[name=token]", "not-the-token")
    page.click("#login button")
    assert "No role has that token" in page.inner_text("#refused")
    log_in(page, loaded_hub, "/department/service")
    assert page.url.endswith("/department/service") and page.locator("section[data-query]").count() >= 2
    # department pages without personal data are open
    assert page.context.browser.new_page().goto(console + "/department/finance").status == 200


def test_the_customer_page_finds_a_person_by_phone_with_exactly_their_events(page, loaded_hub):
    client = loaded_hub.hub.client
    # a French mobile held by one customer with several events
    customer, phone = client.query("""
        SELECT i.customer_id, arrayFirst(x -> startsWith(x, 'phone:+336'), i.identifiers) AS phone
        FROM customer_identities AS i FINAL INNER JOIN (SELECT * FROM customer_profiles FINAL WHERE deleted = 0) AS p
            ON i.customer_id = p.customer_id
        WHERE i.deleted = 0 AND phone != '' AND p.events >= 3
          AND (SELECT count() FROM customer_identities FINAL WHERE deleted = 0 AND has(identifiers, phone)) = 1
        ORDER BY p.events DESC, i.customer_id LIMIT 1""").result_rows[0]
    national = "0" + phone[len("phone:+33"):]
    typed = " ".join([national[:2]] + [national[i:i + 2] for i in range(2, 10, 2)])   # 06 12 34 56 78, as said on the phone
    log_in(page, loaded_hub, "/customer")
    page.fill("form.search input[name=q]", typed)
    page.click("form.search button")
    page.wait_for_load_state()
    assert page.url.endswith("/customer/" + customer), page.url
    shot(page, "customer-360")
    expected = [[shown(v) for v in (r["event_time"], r["channel"], r["event_type"], r["source_id"], r["amount"])]
                for r in rows_of(loaded_hub, "service_customer_history", customer=customer)]
    cells = page.eval_on_selector_all("#timeline tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
    assert [row[:5] for row in cells] == expected and len(expected) >= 3
    assert phone in page.inner_text("#identifiers")
    profile = dict(page.eval_on_selector_all("#profile tbody tr", "rows => rows.map(r => [r.cells[0].innerText, r.cells[1].innerText])"))
    [stored] = client.query("SELECT events, online_orders + store_orders FROM customer_profiles FINAL WHERE customer_id = {c:String}",
                            parameters={"c": customer}).result_rows
    assert profile["events"] == str(stored[0]) and int(profile["online orders"]) + int(profile["store orders"]) == stored[1]


def test_each_department_page_draws_the_numbers_of_its_sql(page, loaded_hub):
    console, campaign, capacity = loaded_hub.hub.console.address, campaign_of(loaded_hub), 30
    log_in(page, loaded_hub)

    page.goto(console + "/department/kpis")
    [kpis] = rows_of(loaded_hub, "kpis_shared")
    tiles = dict(page.eval_on_selector_all('section[data-query="kpis_shared"] .tile', "els => els.map(e => [e.dataset.name, e.dataset.value])"))
    assert tiles == {name: shown(value) for name, value in kpis.items()}
    shot(page, "kpis")

    page.goto(console + "/department/finance")
    [profit] = rows_of(loaded_hub, "finance_promotion_profitability", campaign=campaign)
    parts = ["revenue", "cost_of_goods", "shipping", "media", "net_margin"]
    assert bars(page, "finance_promotion_profitability") == [["amount", p, shown(profit[p])] for p in parts]
    groups = rows_of(loaded_hub, "finance_online_vs_store")
    assert sorted(bars(page, "finance_online_vs_store")) == sorted(
        [[series, g["customers"], shown(g[column])] for g in groups
         for series, column in (("online revenue", "online_revenue"), ("store revenue", "store_revenue"))])
    shot(page, "finance")

    page.goto(console + "/department/purchasing")
    top = rows_of(loaded_hub, "purchasing_sku_demand", campaign=campaign)[:15]
    assert sorted(bars(page, "purchasing_sku_demand")) == sorted(
        [[series, r["sku"], shown(r[column])] for r in top for series, column in (("before", "units_before"), ("during", "units_during"))])
    shot(page, "purchasing")

    page.goto(console + "/department/operations")
    hours = rows_of(loaded_hub, "operations_orders_per_hour")
    assert [b[2] for b in bars(page, "operations_orders_per_hour") if b[0] == "web orders"] == [str(h["web_orders"]) for h in hours]
    shot(page, "operations")

    page.goto(console + "/department/marketing")
    everyone = next(r for r in rows_of(loaded_hub, "marketing_campaign_conversion", campaign=campaign) if r["channel_name"] == "all")
    assert bars(page, "marketing_campaign_conversion") == [["events", "visits", str(everyone["visits"])],
                                                            ["events", "orders", str(everyone["orders"])]]
    shot(page, "marketing")

    page.goto(console + "/department/it")
    load = rows_of(loaded_hub, "it_load_by_channel_per_minute")
    totals: dict[str, int] = {}
    for r in load:
        totals[shown(r["minute"])] = totals.get(shown(r["minute"]), 0) + r["events"]
    drawn = json.loads(page.get_attribute('section[data-query="it_load_by_channel_per_minute"] polyline[data-series="all channels"]',
                                          "data-points"))
    assert drawn == [[minute, str(n)] for minute, n in sorted(totals.items())]
    flagged = {shown(r["minute"]): r["flag"] for r in rows_of(loaded_hub, "it_load_per_minute", capacity=capacity) if r["flag"]}
    marks = dict(page.eval_on_selector_all("path.mark", "els => els.map(e => [e.dataset.x, e.dataset.why])"))
    assert marks == flagged and "over capacity" in marks.values()
    assert page.get_attribute("line.reference", "data-value") == str(capacity)
    letters = rows_of(loaded_hub, "it_dead_letters_by_reason")[:12]
    assert [b[2] for b in bars(page, "it_dead_letters_by_reason")] == [str(r["records"]) for r in letters] and letters
    shot(page, "it")


def test_a_wrong_merge_is_split_from_the_customer_page(page, loaded_hub):
    client = loaded_hub.hub.client
    customer, identifier = client.query("""
        SELECT customer_id, arrayFirst(x -> startsWith(x, 'email:'), identifiers) AS email FROM customer_identities FINAL
        WHERE deleted = 0 AND length(identifiers) >= 2 AND email != '' ORDER BY customer_id LIMIT 1""").result_rows[0]
    log_in(page, loaded_hub, f"/customer/{customer}")
    page.check(f'#split input[value="{identifier}"]')
    page.fill("#split input[name=reason]", "two people behind one account (browser test)")
    page.click("#split button")
    page.wait_for_load_state()
    assert "Split sent" in page.inner_text("#notice")

    def moved() -> bool:
        rows = client.query("SELECT customer_id FROM customer_identities FINAL WHERE deleted = 0 AND has(identifiers, {i:String})",
                            parameters={"i": identifier}).result_rows
        return len(rows) == 1 and rows[0][0] != customer

    loaded_hub.call(wait_for(moved, 60, f"{identifier} under a new customer", loaded_hub.hub))
    page.goto(loaded_hub.hub.console.address + "/customer?q=" + identifier.split(":", 1)[1])
    assert re.search(r"/customer/[0-9a-f-]{36}$", page.url) and not page.url.endswith(customer)
    shot(page, "after-split")


def test_reports_a_person_can_send(page, loaded_hub, tmp_path):
    runner = CliRunner(env=child_environment(loaded_hub.settings, loaded_hub.hub.bootstrap))
    campaign = campaign_of(loaded_hub)
    html = tmp_path / "finance.html"
    result = runner.invoke(cli, ["report", "finance", "--format", "html", "--output", str(html)])
    assert result.exit_code == 0, result.output
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(html.as_uri())
    assert requests == [html.as_uri()]   # self-contained: nothing else fetched
    [profit] = rows_of(loaded_hub, "finance_promotion_profitability", campaign=campaign)
    assert [b[2] for b in bars(page, "finance_promotion_profitability")] == [
        shown(profit[p]) for p in ("revenue", "cost_of_goods", "shipping", "media", "net_margin")]
    shot(page, "report-finance")

    folder = tmp_path / "csv"
    result = runner.invoke(cli, ["report", "purchasing", "--format", "csv", "--output", str(folder)])
    assert result.exit_code == 0, result.output
    with (folder / "purchasing_sku_demand.csv").open() as file:
        written = list(csv.DictReader(file))
    demand = rows_of(loaded_hub, "purchasing_sku_demand", campaign=campaign)
    assert written == [{k: shown(v) for k, v in row.items()} for row in demand]

    result = runner.invoke(cli, ["report", "kpis", "--format", "json"])
    assert result.exit_code == 0, result.output
    [query] = json.loads(result.output)["queries"]
    [kpis] = rows_of(loaded_hub, "kpis_shared")
    assert dict(zip(query["columns"], query["rows"][0]))["revenue"] == shown(kpis["revenue"])
