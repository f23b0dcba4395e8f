"""Forgetting a person everywhere (issue 13): a generated promotion goes through every bundled connector,
the worker and the sink; three people are forgotten (one by customer id, one by email, one by phone; the
first known on several channels and with a dead-lettered record); then every topic is read from its
beginning (values, keys and headers; changelog records decompressed; every sealed field opened with the
vault) and every ClickHouse table is read whole: none of their identifiers or texts is readable, the
totals are unchanged, and the hub goes on resolving and reporting."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections import Counter

import lz4.frame
import pytest

from connectors.config import bundled_configs
from connectors.runtime import run_connector
from connectors.scenario import Scenario, generate
from infra.hub import Hub, child_environment
from infra.kafka import matching_topics, read_topic
from infra.vault import open_vault
from schemas.identifiers import normalize_email
from schemas.serde import codec
from sinks.named_queries import named_query, stored_counts
from streams.app import state_changelog
from tests.conftest import isolated_settings
from tests.fixtures import channel_config, channel_topic
from tests.test_pipeline import wait_for

pytestmark = pytest.mark.integration

CUSTOMERS, EVENTS, SEED = 300, 3000, 13
SCHEMA_OF = {"customer_timeline": "timeline_event", "customer_profiles": "customer_profile",
             "identity_merges": "identity_merge", "identity_warnings": "identity_warning",
             "customer_erasures": "customer_erasure", "dead_letters": "dead_letter"}


def forms(known: list[str]) -> set[str]:
    """Every way the generator writes the identifiers the hub knew a person by ("kind:value"), lower-cased."""
    values = set()
    for identifier in known:
        kind, _, value = identifier.partition(":")
        if kind == "phone":
            digits = value.lstrip("+")
            national = "0" + digits[3:] if digits.startswith(("590", "596", "262")) else "0" + digits[2:]
            values |= {digits, national, " ".join(national[i:i + 2] for i in range(0, 10, 2)), "00" + digits}
        elif kind == "social_handle":
            values.add(value.partition(":")[2])
        else:
            values.add(value.lower())
    return values


def found(values, text: str) -> list[str]:
    """The values written in text as whole words (zoe.garcia.12 is not in zoe.garcia.123)."""
    return sorted(v for v in values if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w])", text))


def sealed_fields(name: str, record: dict) -> list[bytes]:
    if name == "timeline_event":
        return [i["sealed"] for i in record["identifiers"] if i.get("sealed")] + [record["sealed_details"] or b""]
    if name == "channel_event":
        return [i["sealed"] for i in record["identifiers"] if i.get("sealed")] + [record["sealed_personal"] or b""]
    if name == "customer_profile":
        return list(record["sealed_identifiers"])
    if name == "dead_letter" and record["identifier_tokens"]:
        return [record["raw"]]
    return []


async def readable_kafka(settings, bootstrap: str, channel_topics: list[str]) -> str:
    """Everything on every topic as anyone with the vault could read it now, lower-cased."""
    vault = open_vault(settings)
    texts = []
    topics = {getattr(settings.topics, attribute): schema for attribute, schema in SCHEMA_OF.items()}
    topics.update({topic: "channel_event" for topic in channel_topics})
    topics[settings.topics.identity_commands] = None
    topics[state_changelog(settings)] = "changelog"
    for topic, name in topics.items():
        decode = codec(name).decode if name not in (None, "changelog") else None
        for record in await read_topic(settings, bootstrap, topic, idle_seconds=0.5):
            value = record.value or b""
            texts.append(repr((record.key, record.headers)))
            if name == "changelog":
                value = lz4.frame.decompress(value) if value[:4] == b"\x04\x22\x4d\x18" else value
            texts.append(value.decode("utf-8", "replace"))
            if decode is not None and record.value is not None:
                decoded = decode(record.value)
                texts.append(repr(decoded))
                texts.extend((vault.open(blob) or b"").decode("utf-8", "replace") for blob in sealed_fields(name, decoded) if blob)
    return "\n".join(texts).lower()


def readable_clickhouse(client) -> str:
    tables = [row[0] for row in client.query("SELECT name FROM system.tables WHERE database = currentDatabase() "
                                             "AND engine NOT LIKE '%View'").result_rows]
    return "\n".join(repr(client.query(f"SELECT * FROM `{table}`").result_rows) for table in tables).lower()


def totals(client) -> tuple:
    [kpis] = client.query(named_query("kpis_shared")).result_rows
    lines = client.query("SELECT count(), sum(quantity * unit_price_minor) FROM order_lines FINAL").result_rows[0]
    return kpis[:3], stored_counts(client)[0], lines


@pytest.fixture(scope="module")
def forgotten(kafka_bootstrap, clickhouse_location, tmp_path_factory) -> dict:
    """The promotion loaded, three people forgotten, one more order loaded; what was readable before and after."""
    tmp_path = tmp_path_factory.mktemp("erasure")
    settings = isolated_settings(kafka_bootstrap, clickhouse_location, tmp_path)
    out = tmp_path / "scenario"
    manifest = generate(out, customers=CUSTOMERS, events=EVENTS, seed=SEED)
    scenario = Scenario(CUSTOMERS, EVENTS, SEED)
    counts = Counter()
    for line in (out / "ground_truth.csv").read_text().splitlines()[1:]:
        channel, _, person = line.split(",")
        if person:
            counts[person, channel] += 1
    channels = Counter(person for person, _ in counts)
    by_id = {p.id: p for p in scenario.people}
    # one known on several channels (merged), one asked for by email, one by phone
    several = [by_id[p] for p in sorted((p for p in by_id if channels[p] >= 3), key=lambda p: -channels[p])]
    first, by_email = several[:2]
    # asked for by a phone that was on orders (some people never give theirs, some share a family's)
    phones = Counter(p.phone for p in scenario.people)
    on_orders = (out / "web-orders.jsonl").read_text()
    by_phone = next(p for p in several[2:] if phones[p.phone] == 1 and p.phone[2:] in on_orders)
    secrets = {p.id: f"secret-text-of-{p.id.lower()}" for p in (first, by_email, by_phone)}
    with (out / "web-orders.jsonl").open("a") as file:   # a dead-lettered record of the first: a bad date
        file.write(json.dumps({"order_id": "W-99999999", "created_at": "yesterday", "currency": "EUR",
                               "customer": {"email": first.email, "phone": "+" + first.phone},
                               "lines": [{"sku": "TV-001", "qty": 1, "unit_price": "10.00"}], "total": "10.00"}) + "\n")
    with (out / "support-tickets.jsonl").open("a") as file:  # what each of them wrote, to be found nowhere after
        for n, person in enumerate((first, by_email, by_phone)):
            file.write(json.dumps({"ticket_id": f"T-9999999{n}", "update_id": 1, "updated_at": "2026-11-20T23:00:00+00:00",
                                   "via": "email", "status": "new", "subject": f"{secrets[person.id]}: call +{person.phone}",
                                   "requester": {"email": person.email}, "order_ref": None, "assignee": "agent-1"}) + "\n")

    async def scenario_run() -> dict:
        async with Hub(settings) as hub:
            topics = []
            accepted = 0
            for path in bundled_configs():
                config = channel_config(settings, tmp_path, path.stem)
                report = await run_connector(settings, hub.bootstrap, config, out / manifest["channels"][path.stem]["file"])
                assert report.reconciles, report.describe()
                accepted += report.accepted
                topics.append(channel_topic(settings, path.stem))
            await wait_for(lambda: stored_counts(hub.client)[0] >= accepted, 180, f"{accepted} events stored", hub)
            before_kafka = await readable_kafka(settings, hub.bootstrap, topics)
            before = totals(hub.client), readable_clickhouse(hub.client)
            env = child_environment(settings, hub.bootstrap)
            known = {}   # what the hub knew each of them by: what must be unreadable afterwards
            for person in (first, by_email, by_phone):
                query = ("SELECT customer_id, identifiers FROM customer_identities FINAL WHERE deleted = 0 AND "
                         "has(identifiers, {i:String})")
                email = f"email:{normalize_email(person.email)}"
                [(customer_id, identifiers)] = await wait_for(
                    lambda: hub.client.query(query, parameters={"i": email}).result_rows, 60, f"{email}'s profile", hub)
                known[person.id] = (customer_id, identifiers + [f"email:{person.email}"])   # as written too
            assert len(known[first.id][1]) >= 2                       # merged across channels
            assert f"phone:+{by_phone.phone}" in known[by_phone.id][1]
            for who in (known[first.id][0], by_email.email.upper(), "+" + by_phone.phone):
                forgotten = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "infra.cli", "forget", who],
                                                    env=env, capture_output=True, text=True, timeout=120)
                assert forgotten.returncode == 0 and "forgotten: customer" in forgotten.stdout, forgotten.stdout + forgotten.stderr
            await wait_for(lambda: not any(s in readable_clickhouse(hub.client) for s in secrets.values()), 60,
                           "their texts gone from ClickHouse", hub)
            await asyncio.sleep(2 * settings.sink.batch_max_seconds)
            after_kafka = await readable_kafka(settings, hub.bootstrap, topics)
            after = totals(hub.client), readable_clickhouse(hub.client)
            # the hub goes on: a new order of someone else is resolved and reported
            extra = tmp_path / "extra.jsonl"
            extra.write_text(json.dumps({"order_id": "W-88888888", "created_at": "2026-11-21T10:00:00+01:00",
                                         "currency": "EUR", "customer": {"email": "new.buyer@example.com"},
                                         "lines": [{"sku": "TV-001", "qty": 1, "unit_price": "20.00"}],
                                         "total": "20.00"}) + "\n")
            await run_connector(settings, hub.bootstrap, channel_config(settings, tmp_path, "web-orders"), extra)
            await wait_for(lambda: stored_counts(hub.client)[0] >= accepted + 1, 60, "the new order stored", hub)
            revenue_then = totals(hub.client)[0][0]
            [(customer_id, identifiers)] = await wait_for(lambda: hub.client.query(
                "SELECT customer_id, identifiers FROM customer_identities FINAL WHERE has(identifiers, "
                "'email:new.buyer@example.com') AND deleted = 0").result_rows, 60, "the new buyer's profile", hub)
            return {"before_kafka": before_kafka, "after_kafka": after_kafka, "before": before, "after": after, "known": known,
                    "revenue_then": revenue_then, "new_buyer": {"customer_id": customer_id, "identifiers": identifiers},
                    "channel_topics": await asyncio.to_thread(
                        matching_topics, hub.bootstrap, settings.topics.channel_pattern)}

    return {**asyncio.run(scenario_run()), "people": (first, by_email, by_phone), "secrets": secrets,
            "others": [p for p in scenario.people if p.id not in {first.id, by_email.id, by_phone.id} and channels[p.id] >= 2]}


def test_three_people_forgotten_leave_no_readable_copy_on_any_topic_or_table(forgotten):
    seen, secrets = forgotten, forgotten["secrets"]
    for person in seen["people"]:
        assert found([person.email.lower(), secrets[person.id]], seen["before_kafka"]) == \
            sorted([person.email.lower(), secrets[person.id]])                      # readable before
        assert secrets[person.id] in seen["before"][1]
        for where, text in (("Kafka", seen["after_kafka"]), ("ClickHouse", seen["after"][1])):
            leaked = found(forms(seen["known"][person.id][1]) | {secrets[person.id]}, text)
            assert not leaked, f"{person.id} still readable in {where}: {leaked}"
    assert seen["after"][0] == seen["before"][0]          # amounts, counts and lines unchanged


def test_after_forgetting_the_hub_resolves_and_reports_as_before(forgotten):
    assert forgotten["revenue_then"] == forgotten["before"][0][0][0] + 20   # the next order, in every report
    assert forgotten["new_buyer"]["identifiers"] == ["email:new.buyer@example.com"]    # resolved, readable to service
    # someone not forgotten stays readable for customer service
    assert any(found([p.email.lower()], forgotten["after"][1]) for p in forgotten["others"])
