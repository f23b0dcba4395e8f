"""Identity resolution in the running Faust worker, on the real broker: merges, refused merges,
splits, redelivery, late events, and kill -9 with tables recovered from their changelogs."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from aiokafka import AIOKafkaProducer

from infra.hub import Hub, child_environment
from infra.kafka import ensure_topics, read_topic
from schemas.models import event_id
from schemas.serde import codec
from infra.vault import open_vault
from streams.identity import IdentityGraph, customer_id_for
from streams.resolver import identity_rules
from tests.fixtures import channel_topic

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)


def channel_event(source_id: str, identifiers: list[tuple[str, str]], minutes: int, channel: str = "web",
                  event_type: str = "order", total: int | None = 1000) -> dict:
    return {"event_id": event_id(channel, source_id), "channel": channel, "event_type": event_type,
            "source_id": source_id, "occurred_at": T0 + timedelta(minutes=minutes), "connector": "test",
            "identifiers": [{"kind": k, "value": v, "platform": None} for k, v in identifiers],
            "currency": "EUR", "total_minor": total, "lines": [], "attributes": {}}


async def produce(settings, topic: str, events: list[dict], timestamp_ms: int | None = None) -> None:
    encode = codec("channel_event").encode
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, encode(e), key=e["source_id"].encode(), timestamp_ms=timestamp_ms)
                               for e in events])
    finally:
        await producer.stop()


async def read(settings, hub, topic: str, name: str) -> list[tuple[str | None, dict | None]]:
    records = await read_topic(settings, hub.bootstrap, topic, idle_seconds=1.0)
    decode = codec(name).decode
    return [(r.key.decode() if r.key else None, decode(r.value) if r.value is not None else None) for r in records]


async def wait_for_timeline(settings, hub, count: int, timeout: float = 90, distinct: bool = True) -> list:
    """The timeline's records once it holds count distinct events (redeliveries repeat an event id), or
    count records with distinct=False."""
    deadline = time.monotonic() + timeout
    while True:
        timeline = await read(settings, hub, settings.topics.customer_timeline, "timeline_event")
        if (len({record["event_id"] for _, record in timeline}) if distinct else len(timeline)) >= count:
            return timeline
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(timeline)}/{count} timeline records\n{hub.worker.log_file.read_text()[-3000:]}")
        await asyncio.sleep(0.5)


def key_of(settings, text: str) -> str:
    """How the worker keys an identifier: kind:token under this hub's vault."""
    return IdentityGraph(identity_rules(settings), {}, {}, {}, {}, {}, {},
                         tokenize=open_vault(settings).token).identifier_key(text)


def customer_of(settings, text: str) -> str:
    """The id of a customer first seen with this identifier."""
    return customer_id_for(key_of(settings, text))


def latest_profiles(records) -> dict:
    latest = {}
    for key, value in records:
        latest[key] = value  # compacted-topic semantics: the last value per key wins, None deletes
    return {key: value for key, value in latest.items() if value is not None}


def test_merge_refusal_redelivery_late_event_and_split(settings, tmp_path):
    topic = channel_topic(settings, "test")
    ensure_topics(settings.kafka.bootstrap_servers, [topic], settings.topics.partitions, 1)
    alice, card = customer_of(settings, "email:alice@x.com"), customer_of(settings, "loyalty_id:LC-1")
    phone = key_of(settings, "phone:+33612345678")
    first = [
        channel_event("W-1", [("email", "Alice@X.com")], 60),
        channel_event("R-1", [("loyalty_id", "LC-1"), ("phone", "06 12 34 56 78")], 0, "store", "receipt", 500),  # earlier
        channel_event("W-2", [("email", "alice@x.com"), ("phone", "+33612345678")], 120),          # links both: merge
        channel_event("R-2", [("loyalty_id", "LC-2"), ("phone", "0612345678")], 130, "store", "receipt", 700),  # refused
    ]

    accepted = {event["source_id"]: int(time.time() * 1000) - 60_000 + i for i, event in enumerate(first)}

    async def scenario():
        async with Hub(settings) as hub:
            for count, event in enumerate(first, start=1):  # one at a time: partitions do not order each other
                await produce(settings, topic, [event], timestamp_ms=accepted[event["source_id"]])
                await wait_for_timeline(settings, hub, count)
            decode = codec("timeline_event").decode
            stamped = {decode(r.value)["source_id"]: r.timestamp
                       for r in await read_topic(settings, hub.bootstrap, settings.topics.customer_timeline, idle_seconds=1.0)}
            # each timeline record carries its channel record's timestamp: when the connector accepted the event
            assert stamped == accepted, (stamped, accepted)
            await produce(settings, topic, first[:1])  # redelivered
            timeline = await wait_for_timeline(settings, hub, 5, distinct=False)
            env = child_environment(settings, hub.bootstrap)
            split = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "infra.cli", "identity", "split", alice,
                                            "--identifier", "phone:+33612345678", "--reason", "test: wrong merge"],
                                            env=env, capture_output=True, text=True, timeout=60)
            assert split.returncode == 0, split.stderr
            await asyncio.sleep(2)
            await produce(settings, topic, [channel_event("W-3", [("phone", "0612345678")], 200)])
            timeline = await wait_for_timeline(settings, hub, 5)
            merges = await read(settings, hub, settings.topics.identity_merges, "identity_merge")
            warnings = await read(settings, hub, settings.topics.identity_warnings, "identity_warning")
            profiles = await read(settings, hub, settings.topics.customer_profiles, "customer_profile")
            deadline = time.monotonic() + 60
            query = "SELECT source_id, customer_id, published_customer_id FROM timeline_current ORDER BY source_id"
            while len(rows := hub.client.query(query).result_rows) < 5 or \
                    not hub.client.query("SELECT count() FROM identity_map").result_rows[0][0]:
                assert time.monotonic() < deadline, rows
                await asyncio.sleep(0.5)
            profile_query = ("SELECT p.customer_id, p.events, p.deleted, i.identifiers FROM customer_profiles AS p FINAL "
                             "LEFT JOIN (SELECT * FROM customer_identities FINAL) AS i USING customer_id")
            while not (stored := {r[0]: r[1:] for r in hub.client.query(profile_query).result_rows}).get(card, (0, 0))[1]:
                assert time.monotonic() < deadline, stored
                await asyncio.sleep(0.5)
            return timeline, merges, warnings, profiles, {r[0]: r[1:] for r in rows}, stored

    timeline, merges, warnings, profiles, in_clickhouse, stored_profiles = asyncio.run(scenario())
    # profiles in ClickHouse: the absorbed id deleted, the survivor counting 3 events; identifiers kept apart
    assert stored_profiles[card][1] == 1 and stored_profiles[alice][:2] == (3, 0)
    assert "email:alice@x.com" in stored_profiles[alice][2]
    # ClickHouse re-keys history through the merge at query time: R-1 was published under its own id
    assert in_clickhouse["R-1"] == (alice, card) and in_clickhouse["W-1"] == (alice, alice)
    assert len(in_clickhouse) == 5  # W-1 delivered twice, one row
    by_source = defaultdict(set)
    for _, record in timeline:
        by_source[record["source_id"]].add(record["customer_id"])
    assert by_source["W-1"] == {alice} and by_source["W-2"] == {alice}
    assert by_source["R-1"] == {card}                                # published before the merge, under its own id
    assert by_source["R-2"] == {customer_of(settings, "loyalty_id:LC-2")}  # the refused merge kept LC-2 apart
    [merge, split] = [m for _, m in merges]
    # merges name identifiers by token (a keyed hash), never by value
    assert (merge["action"], merge["surviving_id"], merge["absorbed_id"], merge["identifier"]) == \
        ("merge", alice, card, phone)
    assert (split["action"], split["surviving_id"], split["identifier"]) == ("split", alice, phone)
    assert by_source["W-3"] == {split["absorbed_id"]}                 # after the split the phone is someone else's
    reasons = [w["reason"] for _, w in warnings]
    assert any("conflicting loyalty_id" in r and key_of(settings, "loyalty_id:LC-1") in r
               and key_of(settings, "loyalty_id:LC-2") in r for r in reasons)
    assert not any("LC-1" in r or "LC-2" in r or "alice@" in r or "612345678" in r for r in reasons)
    assert any("test: wrong merge" in r for r in reasons)
    latest = latest_profiles(profiles)
    assert card not in latest                                        # tombstoned when merged away
    profile = latest[alice]
    assert (profile["events"], profile["online_orders"], profile["store_orders"]) == (3, 2, 1)  # W-1 counted once
    assert profile["first_seen"] == T0 and profile["merged_ids"] == [card]


def test_worker_killed_mid_stream_recovers_its_tables(settings, tmp_path):
    topic = channel_topic(settings, "test")
    ensure_topics(settings.kafka.bootstrap_servers, [topic], settings.topics.partitions, 1)
    people = 300
    # per person: an online order (email), a store receipt (card + phone), an order linking email and phone
    batches = [[channel_event(f"W-{p}", [("email", f"p{p}@x.com")], p) for p in range(people)],
               [channel_event(f"R-{p}", [("loyalty_id", f"LC-{p}"), ("phone", f"06{10_000_000 + p:08d}")], p, "store", "receipt")
                for p in range(people)],
               [channel_event(f"L-{p}", [("email", f"p{p}@x.com"), ("phone", f"+336{10_000_000 + p:08d}")], 500 + p)
                for p in range(people)]]
    person_of = {e["event_id"]: i for batch in batches for i, e in enumerate(batch)}

    async def scenario():
        async with Hub(settings) as hub:
            await produce(settings, topic, batches[0] + batches[1])
            await wait_for_timeline(settings, hub, people)             # some state in the tables
            hub.worker.kill()                                          # SIGKILL: no commit, no clean leave
            await produce(settings, topic, batches[2])                 # the hub's supervisor restarts it
            timeline = await wait_for_timeline(settings, hub, 3 * people, timeout=180)
            await asyncio.sleep(2)
            merges = await read(settings, hub, settings.topics.identity_merges, "identity_merge")
            profiles = await read(settings, hub, settings.topics.customer_profiles, "customer_profile")
            recovery = [line for line in hub.worker.log_file.read_text().splitlines() if "state recovered" in line]
            restarts = {child.state.name: child.state.restarts for child in hub.supervisor.children}
            return timeline, merges, profiles, recovery, restarts

    timeline, merges, profiles, recovery, restarts = asyncio.run(scenario())
    assert restarts["worker"] == 1, restarts
    assert len(recovery) == 2, recovery  # the first start and the supervisor's restart each recovered the state
    aliases = {m["absorbed_id"]: m["surviving_id"] for _, m in merges if m["action"] == "merge"}

    def current(customer_id):
        while customer_id in aliases:
            customer_id = aliases[customer_id]
        return customer_id

    customers_of = defaultdict(set)
    records_of = defaultdict(set)
    for _, record in timeline:
        customers_of[person_of[record["event_id"]]].add(current(record["customer_id"]))
        records_of[record["event_id"]].add(current(record["customer_id"]))
    assert set(records_of) == set(person_of)                                # no event lost
    # Redelivered records (at-least-once) carry the same event id and, through the merges, the same customer:
    # a consumer deduplicating on the event id sees each event once.
    assert all(len(customers) == 1 for customers in records_of.values())
    assert all(len(ids) == 1 for ids in customers_of.values()), "a person ended up with two customers"
    assert len({next(iter(ids)) for ids in customers_of.values()}) == people
    latest = latest_profiles(profiles)
    # Each person's profile counts each of their 3 events exactly once: nothing lost with the killed
    # worker's tables, nothing counted twice when it re-processed uncommitted events.
    assert sorted(p["events"] for p in latest.values()) == [3] * people
    print(f"{len(timeline)} timeline records for {3 * people} events; {len(merges)} merges; recovery: {recovery[-2:]}")


def test_forget_erases_personal_data_and_tells_downstream(settings, tmp_path):
    topic = channel_topic(settings, "test")
    ensure_topics(settings.kafka.bootstrap_servers, [topic], settings.topics.partitions, 1)
    alice = customer_of(settings, "email:alice@x.com")
    ticket = channel_event("T-1", [("email", "alice@x.com")], 10, "support", "ticket_update", None)
    ticket.update(text="Call me on 06 12 34 56 78", attributes={"contact_channel": "phone", "ticket_id": "T-1"})

    async def scenario():
        async with Hub(settings) as hub:
            for count, event in enumerate([channel_event("W-1", [("email", "alice@x.com")], 0), ticket], start=1):
                await produce(settings, topic, [event])
                await wait_for_timeline(settings, hub, count)
            deadline = time.monotonic() + 60
            while not hub.client.query("SELECT count() FROM customer_identities FINAL WHERE has(identifiers, 'email:alice@x.com')").result_rows[0][0]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.5)
            # what she wrote is kept apart from the events every department reads
            assert "Call me" in repr(hub.client.query("SELECT text FROM event_details").result_rows)
            assert "Call me" not in repr(hub.client.query("SELECT payload_json FROM timeline_events").result_rows)
            env = child_environment(settings, hub.bootstrap)
            before = await read(settings, hub, settings.topics.customer_timeline, "timeline_event")
            # asked by her email, not by an id she never saw; the command topic carries only its token
            forgotten = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "infra.cli", "forget", "Alice@X.com"],
                                                env=env, capture_output=True, text=True, timeout=90)
            assert forgotten.returncode == 0, forgotten.stderr
            assert f"forgotten: customer {alice}" in forgotten.stdout, forgotten.stdout
            while "Call me" in repr(hub.client.query("SELECT text FROM event_details").result_rows) or \
                    hub.client.query("SELECT count() FROM customer_identities WHERE has(identifiers, 'email:alice@x.com')").result_rows[0][0]:
                assert time.monotonic() < deadline + 60, "personal data still in ClickHouse"
                await asyncio.sleep(0.5)
            await produce(settings, topic, [channel_event("W-2", [("email", "alice@x.com")], 20)])  # she comes back
            timeline = await wait_for_timeline(settings, hub, 3)
            erasures = await read(settings, hub, settings.topics.customer_erasures, "customer_erasure")
            profiles = await read(settings, hub, settings.topics.customer_profiles, "customer_profile")
            amounts = hub.client.query("SELECT sum(amount_minor) FROM timeline_events FINAL").result_rows[0][0]
            commands = await read_topic(settings, hub.bootstrap, settings.topics.identity_commands)
            return before, timeline, erasures, profiles, amounts, commands

    before, timeline, erasures, profiles, amounts, commands = asyncio.run(scenario())
    [(_, erasure)] = erasures
    assert erasure["customer_id"] == alice and alice in erasure["customer_ids"] and erasure["identifiers_removed"] == 1
    assert erasure["identifier_tokens"] == [key_of(settings, "email:alice@x.com")]
    assert not any(b"alice" in (record.value or b"").lower() for record in commands)
    # what was published before the erasure was sealed: her keys are gone, so it no longer opens
    vault = open_vault(settings)
    [sealed_ticket] = [r for _, r in before if r["source_id"] == "T-1"]
    assert sealed_ticket["sealed_details"] and vault.open(sealed_ticket["sealed_details"]) is None
    assert all(vault.open(i["sealed"]) is None for _, r in before for i in r["identifiers"])
    assert not any("alice" in repr(r).lower() or "12 34 56" in repr(r) for _, r in before)
    assert [value for key, value in profiles if key == alice][-1] is None   # tombstone
    returning = [r for _, r in timeline if r["source_id"] == "W-2"][0]["customer_id"]
    assert returning != alice                                              # a fresh start, not re-linked
    assert any(key == returning and value is not None for key, value in profiles)
    assert amounts == 2000                                                 # the totals stay


@pytest.mark.parametrize("step", ["state", "outputs"])
def test_worker_stopped_between_commit_steps_republishes_each_event_as_first_published(settings, tmp_path, step):
    """The worker pipelines its batches (streams/checkpoint.py): stopped right after a batch's state was
    acknowledged, or after its outputs, the restarted worker reads uncommitted events again and publishes
    each with the customer id it first had, loses none, and counts none twice."""
    from infra.hub import WorkerProcess
    from infra.kafka import consumer_lag
    from infra.processes import spawn
    from streams.app import resolution_group

    bootstrap = settings.kafka.bootstrap_servers
    topic = channel_topic(settings, "crash")
    ensure_topics(bootstrap, [topic], settings.topics.partitions, 1)
    people = 400
    events = ([channel_event(f"W-{p}", [("email", f"c{p}@x.com")], p) for p in range(people)]
              + [channel_event(f"R-{p}", [("email", f"c{p}@x.com"), ("phone", f"+336{20_000_000 + p:08d}")], 600 + p,
                               "store", "receipt") for p in range(people)])

    async def scenario():
        await produce(settings, topic, events)
        env = {**child_environment(settings, bootstrap), "OMNIHUB_CRASH_AFTER": step}
        crashed = spawn([sys.executable, "-m", "infra.cli", "worker"], tmp_path / "crashed.log", env=env)
        code = await asyncio.to_thread(crashed.wait, 120)
        worker = WorkerProcess(settings, bootstrap).start()

        class Running:  # wait_for_timeline reads the worker's log on failure
            pass
        hub = Running()
        hub.bootstrap, hub.worker = bootstrap, worker
        try:
            deadline = time.monotonic() + 120
            while sum(c for _, _, c, _ in await consumer_lag(bootstrap, [resolution_group(settings)])) < len(events):
                assert time.monotonic() < deadline, worker.log_file.read_text()[-3000:]
                await asyncio.sleep(0.5)  # until the restarted worker committed every event: all it publishes is there
            timeline = await wait_for_timeline(settings, hub, len(events), timeout=120)
            profiles = await read(settings, hub, settings.topics.customer_profiles, "customer_profile")
        finally:
            worker.stop()
        return code, timeline, profiles, (tmp_path / "crashed.log").read_text()

    code, timeline, profiles, crashed_log = asyncio.run(scenario())
    assert code == 137 and f"OMNIHUB_CRASH_AFTER={step}" in crashed_log
    ids = defaultdict(set)
    for _, record in timeline:
        ids[record["event_id"]].add(record["customer_id"])
    assert set(ids) == {e["event_id"] for e in events}                      # nothing lost
    assert all(len(customers) == 1 for customers in ids.values())          # every copy as first published
    if step == "outputs":  # the crashed worker's first batch was published, and is again after the restart
        assert len(timeline) > len(events)
    counted = sum(p["events"] for p in latest_profiles(profiles).values())
    assert counted == len(events)                                           # none counted twice
