"""The scenario generator: deterministic, in each connector's format, with the traps identity
resolution must survive, and a ground truth that covers every valid record."""
from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from datetime import datetime

import pytest

from connectors.config import find_config
from connectors.runtime import Connector, sample_records
from connectors.scenario import BRAND_HANDLE, PLACEHOLDER_EMAIL, PLACEHOLDER_PHONE, generate
from infra.settings import load_settings


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenario")
    return out, generate(out, customers=400, events=6000, seed=11, malformed_rate=0.01)


def test_same_seed_same_bytes_and_another_seed_differs(scenario, tmp_path):
    out, _ = scenario
    again = generate(tmp_path / "again", customers=400, events=6000, seed=11, malformed_rate=0.01, processes=1)
    other = generate(tmp_path / "other", customers=400, events=6000, seed=12, malformed_rate=0.01)
    for name in ("web-orders.jsonl", "store-sales.csv", "ground_truth.csv", "people.csv"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert (out / "web-orders.jsonl").read_bytes() != (tmp_path / "other" / "web-orders.jsonl").read_bytes()
    assert again["channels"] == json.loads((out / "manifest.json").read_text())["channels"]
    assert other["events"] == 6000


def test_every_connector_accepts_the_valid_records_and_rejects_the_malformed(scenario):
    out, manifest = scenario
    settings = load_settings()
    truth = defaultdict(dict)
    with (out / "ground_truth.csv").open() as file:
        for row in csv.DictReader(file):
            truth[row["channel"]][row["source_id"]] = row["person_id"]
    assert sum(c["records"] for c in manifest["channels"].values()) == 6000
    for name, expected in manifest["channels"].items():
        connector = Connector(settings, "", find_config(name))
        results = list(connector.preview(sample_records(connector, out / expected["file"])[1]))
        accepted = [event for _, event, reason in results if reason is None]
        assert (len(results), len(accepted)) == (expected["records"], expected["valid"]), name
        assert expected["malformed"] > 0
        # the ground truth names exactly the accepted events
        assert sorted(e["source_id"] for e in accepted) == sorted(truth[connector.config.channel]), name


def test_the_data_carries_the_traps_of_real_data(scenario):
    out, _ = scenario
    orders = [json.loads(line) for line in (out / "web-orders.jsonl").read_text().splitlines() if line.endswith("}")]
    emails = [o["customer"]["email"] for o in orders if isinstance(o.get("customer"), dict)]
    assert any(e != e.strip() for e in emails) and any(e.strip() != e.strip().lower() for e in emails)
    phones = [o["customer"].get("phone") for o in orders if isinstance(o.get("customer"), dict) and o["customer"].get("phone")]
    assert any(p.startswith("+33") for p in phones) and any(p.startswith("0") for p in phones)

    with (out / "store-sales.csv").open() as file:
        rows = [r for r in csv.DictReader(file, delimiter=";") if r.get("currency")]
    people = {}
    with (out / "ground_truth.csv").open() as file:
        for row in csv.DictReader(file):
            people[(row["channel"], row["source_id"])] = row["person_id"]
    by_value = defaultdict(set)
    for row in rows:
        person = people.get(("store", f"{row['store_id']}:{row['receipt_id']}"))
        if person:
            by_value["terminal", row["store_id"] + row["terminal_id"]].add(person)
            if row["customer_phone"] == PLACEHOLDER_PHONE:
                by_value["placeholder", "phone"].add(person)
            if row["customer_email"] == PLACEHOLDER_EMAIL:
                by_value["placeholder", "email"].add(person)
    # one till and one placeholder each stand for many different people
    assert max(len(v) for k, v in by_value.items() if k[0] == "terminal") > 10
    assert len(by_value["placeholder", "phone"]) > 1 and len(by_value["placeholder", "email"]) > 1
    assert sum(row["customer_phone"] == PLACEHOLDER_PHONE for row in rows) > 10

    social = [json.loads(l) for l in (out / "social-messages.jsonl").read_text().splitlines() if l.endswith("}")]
    brand = [s for s in social if s.get("author", {}).get("handle") == BRAND_HANDLE and "id" in s]
    assert brand and all(people.get(("social", f"{s['platform']}:{s['id']}"), "") == "" for s in brand)

    sessions = Counter(s.get("user") is None for s in map(json.loads, filter(lambda l: l.endswith("}"),
                       (out / "app-sessions.jsonl").read_text().splitlines())))
    assert sessions[True] > sessions[False] > 0   # most app sessions are anonymous

    # overseas mobiles typed at tills and on forms without their country code (invalid for FR alone)
    assert any(p.replace(" ", "").startswith(("0690", "0696", "0692")) for p in phones)
    # a till model that exports no receipt total: the connector derives it from the lines
    assert {r["store_id"] for r in rows if r["receipt_total"] == ""} == {"MRS-01", "MRS-02"}
    # messages naming someone else's order, some of them before that order was placed
    order_of = {o["order_id"]: (people.get(("web", o["order_id"])), o["created_at"]) for o in orders if "order_id" in o}
    named = [(s, order_of.get(m.group(0))) for s in social if (m := re.search(r"W-\d{8}", s.get("text", "")))]
    others = [(s, order) for s, order in named if order and order[0] != people.get(("social", f"{s['platform']}:{s.get('id')}"))]
    assert others and any(s["created_time"] < datetime.fromisoformat(order[1]).timestamp() for s, order in others)
    # the returns portal's export is one JSON document, not JSON Lines
    returns = json.loads((out / "returns.json").read_text())
    assert set(returns) == {"exported_at", "returns"} and len(returns["returns"]) > 50


def test_the_tv_ad_makes_a_spike(scenario):
    out, _ = scenario
    per_quarter = Counter()
    for line in (out / "app-sessions.jsonl").read_text().splitlines():
        try:
            started = json.loads(line)["started_at_ms"]
        except (ValueError, KeyError):
            continue
        if isinstance(started, int):
            per_quarter[started // 900_000] += 1
    peak_quarter, peak = per_quarter.most_common(1)[0]
    median = sorted(per_quarter.values())[len(per_quarter) // 2]
    assert peak > 4 * median
    from connectors.scenario import TV_AD
    assert abs(peak_quarter * 900 - TV_AD.timestamp()) <= 1800
