"""Connectors against the real broker: every valid record once on its channel topic, every bad one
in dead letters with its reason, and restarts (clean or kill -9) that lose and duplicate nothing."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

from pathlib import Path

import aiohttp
import pytest
import yaml
from aiokafka.partitioner import DefaultPartitioner

from connectors.mapping import MappingError
from connectors.runtime import ID_HEADER, Connector, run_connector, sample_records
from connectors.webhook import Webhook
from infra.hub import child_environment
from infra.kafka import read_topic
from infra.vault import Vault
from schemas.serde import codec
from tests.fixtures import channel_config, web_order, write_web_orders

pytestmark = pytest.mark.integration


def topic_records(settings, topic: str, connector: str | None = None) -> list:
    records = asyncio.run(read_topic(settings, settings.kafka.bootstrap_servers, topic, idle_seconds=1.5))
    if connector is not None:
        records = [r for r in records if (("connector", connector.encode()) in r.headers)]
    return records


def ids(records) -> list[str]:
    return [dict(r.headers)[ID_HEADER].decode() for r in records]


@pytest.mark.parametrize("name", ["web-orders", "store-sales", "support-tickets", "social-messages"])
def test_file_connector_delivers_valid_records_once_and_dead_letters_the_rest(settings, tmp_path, name):
    config = channel_config(settings, tmp_path, name)
    connector = Connector(settings, settings.kafka.bootstrap_servers, config)
    expected = [(record.position, event, reason) for record, event, reason in connector.preview(sample_records(connector)[1])]

    report = asyncio.run(run_connector(settings, settings.kafka.bootstrap_servers, config))
    assert report.reconciles and report.read == len(expected)
    assert report.accepted == sum(1 for *_, reason in expected if reason is None) and report.rejected > 0

    on_topic = topic_records(settings, connector.topic)
    channel_codec = codec("channel_event")
    assert sorted(channel_codec.decode(r.value)["source_id"] for r in on_topic) == \
        sorted(event["source_id"] for _, event, reason in expected if reason is None)
    assert len(set(ids(on_topic))) == len(on_topic)
    # each keyed record where Kafka's default partitioner puts its key, though the connector hashes a batch at once
    count = settings.topics.partitions
    assert [r.partition for r in on_topic] == [DefaultPartitioner()(r.key, list(range(count)), list(range(count)))
                                               for r in on_topic] and all(r.key for r in on_topic)

    letters = topic_records(settings, settings.topics.dead_letters, connector=connector.config.name)
    decoded = {codec("dead_letter").decode(r.value)["position"]: codec("dead_letter").decode(r.value) for r in letters}
    assert {position: letter["error"] for position, letter in decoded.items()} == \
        {position: reason for position, _, reason in expected if reason is not None}
    for letter in decoded.values():
        assert letter["component"] == f"connector:{name}" and letter["raw"] and letter["source"] == str(source_file(config))
    assert all(dict(r.headers)["error"] and dict(r.headers)["position"] for r in letters)

    again = asyncio.run(run_connector(settings, settings.kafka.bootstrap_servers, config))
    lines = len(source_file(config).read_bytes().splitlines())
    assert (again.read, again.resumed_at) == (0, f"line {lines}")
    assert len(topic_records(settings, connector.topic)) == len(on_topic)


def source_file(config) -> Path:
    return Path(yaml.safe_load(config.read_text())["source"]["path"])


def topic_of(config) -> str:
    return yaml.safe_load(config.read_text())["topic"]


def test_appended_lines_are_read_from_the_committed_position(settings, tmp_path):
    config = channel_config(settings, tmp_path, "web-orders")
    source = write_web_orders(tmp_path / "orders.jsonl", 100)
    first = asyncio.run(run_connector(settings, settings.kafka.bootstrap_servers, config, source))
    with source.open("a") as out:
        for i in range(100, 150):
            out.write(json.dumps(web_order(i)) + "\n")
    second = asyncio.run(run_connector(settings, settings.kafka.bootstrap_servers, config, source))
    assert (first.accepted, second.read, second.accepted, second.resumed_at) == (100, 50, 50, "line 100")
    records = topic_records(settings, topic_of(config))
    assert len(records) == len(set(ids(records))) == 150


def test_connector_killed_mid_file_resumes_without_loss_or_duplicates(settings, tmp_path):
    config = channel_config(settings, tmp_path, "web-orders")
    total = 30_000
    source = write_web_orders(tmp_path / "orders.jsonl", total)
    env = child_environment(settings, settings.kafka.bootstrap_servers)
    positions = settings.data_dir / "connectors" / "web-orders.positions.json"
    process = subprocess.Popen([sys.executable, "-m", "infra.cli", "connectors", "run", str(config), "--source", str(source)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:  # kill -9 right after the first committed batch, while later ones are in flight
        committed = json.loads(positions.read_text())[str(source)]["line"] if positions.exists() else 0
        if committed > 0:
            break
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.5)  # the next batch is being sent: some of it reaches Kafka uncommitted
    process.send_signal(signal.SIGKILL)
    process.wait()
    # the last commit is what the file says now: another batch may have been committed during the sleep
    committed = json.loads(positions.read_text())[str(source)]["line"]
    topic = topic_of(config)
    on_topic_at_kill = len(topic_records(settings, topic))
    assert committed < total, "killed after the end: not mid-file"

    report = asyncio.run(run_connector(settings, settings.kafka.bootstrap_servers, config, source))
    records = topic_records(settings, topic)
    print(f"killed at committed line {committed}; {on_topic_at_kill} records were on Kafka; "
          f"restart skipped {report.already_on_kafka} already there")
    assert report.resumed_at == f"line {committed}"
    assert report.already_on_kafka == on_topic_at_kill - committed
    assert len(records) == len(set(ids(records))) == total


def test_records_of_an_interrupted_batch_are_not_sent_twice(settings, tmp_path):
    """Deterministic version of the kill -9 case: the position says line 500 was the last commit of
    a run that did not end cleanly, while all 2,000 records reached Kafka."""
    config = channel_config(settings, tmp_path, "web-orders")
    source = write_web_orders(tmp_path / "orders.jsonl", 2000)
    asyncio.run(run_connector(settings, settings.kafka.bootstrap_servers, config, source))
    positions = settings.data_dir / "connectors" / "web-orders.positions.json"
    entries = json.loads(positions.read_text())
    offset = sum(len(line) for line in source.read_bytes().splitlines(keepends=True)[:500])
    entries[str(source)].update(offset=offset, line=500, clean=False,
                                produced_from={topic_of(config): {str(p): 0 for p in range(settings.topics.partitions)}})
    positions.write_text(json.dumps(entries))

    report = asyncio.run(run_connector(settings, settings.kafka.bootstrap_servers, config, source))
    assert (report.resumed_at, report.read, report.accepted, report.already_on_kafka) == ("line 500", 1500, 1500, 1500)
    records = topic_records(settings, topic_of(config))
    assert len(records) == len(set(ids(records))) == 2000


def test_a_followed_file_is_read_as_it_grows_until_stopped(settings, tmp_path):
    config = channel_config(settings, tmp_path, "web-orders", poll_seconds=0.1)
    source = write_web_orders(tmp_path / "orders.jsonl", 10)

    async def scenario():
        stop = asyncio.Event()
        run = asyncio.create_task(run_connector(settings, settings.kafka.bootstrap_servers, config, source,
                                                follow=True, stop=stop))
        for start in (10, 20):
            await asyncio.sleep(0.5)
            with source.open("a") as out:
                for i in range(start, start + 10):
                    out.write(json.dumps(web_order(i)) + "\n")
                out.write(json.dumps(web_order(99))[:20])  # a line still being written
            with source.open("rb+") as out:  # the writer finishes that line later
                out.seek(-20, os.SEEK_END)
                out.truncate()
        await asyncio.sleep(0.5)
        stop.set()
        return await run

    report = asyncio.run(scenario())
    assert (report.read, report.accepted, report.rejected) == (30, 30, 0)


def test_webhook_answers_after_kafka_and_rejects_with_reasons(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_WEBHOOK_TOKEN", "s3cret")
    config = channel_config(settings, tmp_path, "app-sessions", port=0, token_env="TEST_WEBHOOK_TOKEN")
    session = {"session_id": "S-1", "started_at_ms": 1795208400000, "user": {"account_id": "A-1"},
               "device": {"os": "ios"}, "screens": 3}
    auth = {"Authorization": "Bearer s3cret"}

    async def scenario():
        webhook = await Webhook(Connector(settings, settings.kafka.bootstrap_servers, config)).start()
        answers = []
        try:
            async with aiohttp.ClientSession() as http:
                async def post(body, headers=None, content_type="application/json"):
                    async with http.post(webhook.address, data=body, headers={**auth, "Content-Type": content_type,
                                                                              **(headers or {})}) as response:
                        answers.append((response.status, await response.json()))
                await post(json.dumps(session), {"X-Request-Id": "r1"})
                await post(json.dumps([session | {"session_id": "S-2"}, session | {"screens": -2}, session | {"session_id": "S-3"}]),
                           {"X-Request-Id": "r2"})
                await post("\n".join(json.dumps(session | {"session_id": f"S-{i}"}) for i in (4, 5)), {"X-Request-Id": "r3"},
                           content_type="application/x-ndjson")
                await post("{not json", {"X-Request-Id": "r4"})
                await post(json.dumps(session), {"Authorization": "Bearer wrong"})
                await post(json.dumps(session), {"X-Request-Id": "r5"})  # a client retry of an acknowledged record
                async with http.get(webhook.address.rsplit("/", 2)[0] + "/health") as response:
                    health = await response.json()
                await webhook.stop()
                # restarted: a retry of what the last process acknowledged is still recognised
                webhook = await Webhook(Connector(settings, settings.kafka.bootstrap_servers, config)).start()
                await post(json.dumps([session | {"session_id": "S-2"}, session | {"session_id": "S-6"}]), {"X-Request-Id": "r6"})
        finally:
            await webhook.stop()
        return answers, health

    answers, health = asyncio.run(scenario())
    statuses = [status for status, _ in answers]
    assert statuses == [200, 422, 200, 400, 401, 200, 200]
    assert answers[1][1]["accepted"] == 2
    assert answers[1][1]["rejected"] == [{"index": 1, "position": "request r2 item 1",
                                          "reason": "attributes.screens (from screens): -2 is below the minimum 0"}]
    assert "not valid JSON" in answers[3][1]["rejected"][0]["reason"]
    assert health == {"connector": "app-sessions", "read": 8, "accepted": 6, "rejected": 2, "resent": 1, "reconciles": True}
    assert answers[5][1]["accepted"] == 1 and answers[6][1]["accepted"] == 2

    topic = topic_of(config)
    sessions = [codec("channel_event").decode(r.value)["source_id"] for r in topic_records(settings, topic)]
    assert sorted(sessions) == ["S-1", "S-2", "S-3", "S-4", "S-5", "S-6"]  # each once, resends and restart included
    letters = [codec("dead_letter").decode(r.value) for r in topic_records(settings, settings.topics.dead_letters, "app-sessions")]
    assert sorted(letter["position"] for letter in letters) == ["request r2 item 1", "request r4"]
    assert [l["raw"] for l in letters if l["position"] == "request r4"] == [b"{not json"]


def test_a_batch_whose_keys_another_connector_created_first_is_sealed_again_with_theirs(settings, tmp_path):
    """Connectors map at the same time and store their new keys when a batch ends (infra/vault.py). When
    another connector stored a key for the same identifier meanwhile, the batch is sealed again with that
    key before anything leaves: every identifier on the topic opens with the key the vault keeps."""
    config = channel_config(settings, tmp_path, "web-orders")
    first, second = (Connector(settings, settings.kafka.bootstrap_servers, config) for _ in range(2))
    second.sealer.vault = Vault(settings.vault_path)  # another process: its own connection and cached keys
    records = list(sample_records(first)[1])
    raced = {"calls": 0}
    prepare = first._prepare

    def prepare_while_another_connector_maps(record, source, by_content):
        prepared = prepare(record, source, by_content)
        raced["calls"] += 1
        if raced["calls"] == len(records):  # this batch's new keys wait in memory: the other connector seals
            for same in sample_records(second)[1]:  # the same people now, and stores its keys first
                try:
                    second.convert(same)
                except MappingError:
                    pass
        return prepared

    first._prepare = prepare_while_another_connector_maps

    async def send() -> list:
        await first.start()
        try:
            outcomes = await first.send_many(records, "sample")
            for outcome in outcomes:
                if outcome.future is not None:
                    await outcome.future
            return outcomes
        finally:
            await first.stop()

    outcomes = asyncio.run(send())
    assert raced["calls"] > len(records)   # the batch was mapped again...
    accepted = [outcome for outcome in outcomes if outcome.reason is None]
    assert accepted
    channel_codec, vault = codec("channel_event"), second.sealer.vault
    for record in topic_records(settings, first.topic):
        event = channel_codec.decode(record.value)
        for identifier in event["identifiers"]:
            if identifier.get("sealed"):   # ...so what left opens with the keys the vault kept
                assert vault.open(identifier["sealed"]) is not None, identifier
        assert event["sealed_personal"] is None or vault.open(event["sealed_personal"]) is not None
