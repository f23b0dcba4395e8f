"""The hub as a service (issue "The hub as a service that loses nothing"), one regression test per defect
seen, on the real embedded broker and chDB: analysts' statements never touch loading, a restart keeps
topics, offsets and customer ids, positions belong to their broker, crashed children are restarted
(and die with the hub), no record stops a source, and a new channel is read while the hub runs."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
import yaml

from connectors.runtime import run_connector
from infra.broker import EmbeddedBroker
from infra.hub import Hub, child_environment
from infra.kafka import broker_id, ensure_topics, read_topic
from infra.vault import open_vault
from infra.processes import pid_alive
from infra.supervision import ChildKeepsFailing, RestartPolicy
from schemas.serde import codec
from tests.fixtures import channel_config, channel_topic, first_port_choice_taken, web_order, write_web_orders
from tests.test_sink import produce_records

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def timeline_record(i: int) -> dict:
    return {"event_id": f"iso-{i:06d}", "event_time": T0 + timedelta(seconds=i), "channel": "web", "event_type": "order",
            "customer_id": f"c-{i % 7}", "source_id": f"W-{i}", "identifiers": [], "amount_minor": 100 + i,
            "currency": "EUR", "payload_json": "{}"}


def post_query(address: str, sql: str, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(address + "/query", method="POST", data=json.dumps({"sql": sql}).encode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def stored_count(hub) -> int:
    return hub.client.query("SELECT count() FROM timeline_events FINAL").result_rows[0][0]


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)


# --- 1. one statement froze loading ---------------------------------------------------------------

HOSTILE = ["DROP TABLE IF EXISTS x", "INSERT INTO timeline_events (event_id) VALUES ('x')", "ALTER TABLE timeline_events DELETE WHERE 1",
           "SET readonly = 0", "USE system", "KILL QUERY WHERE 1", "SYSTEM STOP MERGES", "SELECT 1; SELECT 2",
           "SELECT 1; DROP TABLE timeline_events", "SELECT 1 INTO OUTFILE '{outfile}' TRUNCATE",
           "SELECT * FROM file('/etc/hostname', 'LineAsString')", "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
           "SELECT 1 SETTINGS max_execution_time = 0", "SELECT file('/etc/hostname')"]


def test_analysts_statements_never_touch_loading(settings, tmp_path):
    if not settings.embedded_clickhouse:
        pytest.skip("the query endpoint serves embedded chDB")
    limited = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(update={"query_max_seconds": 10})})
    outfile = tmp_path / "written-by-an-analyst"

    async def scenario():
        async with Hub(limited, start_worker=False) as hub:
            answers = [await asyncio.to_thread(post_query, hub.query_server.address, sql.format(outfile=outfile))
                       for sql in HOSTILE]
            # Loading goes on after all of them, in the sink's own database...
            await produce_records(limited, limited.topics.customer_timeline, "timeline_event",
                                  [timeline_record(i) for i in range(100)])
            await wait_until(lambda: stored_count(hub) == 100, 30, "100 rows after the hostile statements")
            # ...and while a heavy query runs (stopped by query_max_seconds), rows keep arriving.
            heavy: list = []
            thread = threading.Thread(target=lambda: heavy.append(post_query(
                hub.query_server.address, "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1")))
            thread.start()
            await asyncio.sleep(1.0)
            await produce_records(limited, limited.topics.customer_timeline, "timeline_event",
                                  [timeline_record(i) for i in range(100, 200)])
            await wait_until(lambda: stored_count(hub) == 200, 6, "rows loaded while the heavy query runs")
            loaded_during_query = thread.is_alive()
            small = await asyncio.to_thread(post_query, hub.query_server.address, "SELECT 1 AS one", 5)
            await asyncio.to_thread(thread.join, 30)
            database = await asyncio.to_thread(post_query, hub.query_server.address, "SELECT currentDatabase() AS db")
            return answers, loaded_during_query, small, heavy[0], database

    answers, loaded_during_query, small, heavy, database = asyncio.run(scenario())
    for sql, (status, body) in zip(HOSTILE, answers):
        assert status in (400, 403), (sql, status, body)
    refused = {sql: body["error"] for sql, (status, body) in zip(HOSTILE, answers)}
    assert "one statement per request" in refused["SELECT 1; DROP TABLE timeline_events"]
    assert "INTO OUTFILE" in refused["SELECT 1 INTO OUTFILE '{outfile}' TRUNCATE"]
    assert "file()" in refused["SELECT * FROM file('/etc/hostname', 'LineAsString')"]
    assert not outfile.exists()
    assert loaded_during_query, "the heavy query ended before the rows loaded: it did not run alongside"
    assert small == (200, {"columns": ["one"], "rows": [[1]]})
    assert heavy[0] == 400 and "TIMEOUT_EXCEEDED" in heavy[1]["error"]
    assert database == (200, {"columns": ["db"], "rows": [[settings.clickhouse.database]]})


# --- 2. a restart lost data, silently ---------------------------------------------------------------

def test_disk_broker_keeps_topics_offsets_and_its_id_across_a_kill(settings, tmp_path):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def produce_and_consume_half(bootstrap):
        ensure_topics(bootstrap, ["kept"], 2, 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
        await producer.start()
        await asyncio.gather(*[await producer.send("kept", f"{i}".encode(), partition=i % 2) for i in range(1000)])
        await producer.stop()
        consumer = AIOKafkaConsumer("kept", bootstrap_servers=bootstrap, group_id="g", enable_auto_commit=False,
                                    auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000)
        await consumer.start()
        seen = []
        while len(seen) < 400:
            for messages in (await consumer.getmany(timeout_ms=2000, max_records=400 - len(seen))).values():
                seen.extend(int(m.value) for m in messages)
        await consumer.commit()
        await consumer.stop()
        return seen

    async def consume_rest(bootstrap):
        consumer = AIOKafkaConsumer("kept", bootstrap_servers=bootstrap, group_id="g", enable_auto_commit=False,
                                    auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000)
        await consumer.start()
        seen = []
        while batch := await consumer.getmany(timeout_ms=3000):
            for messages in batch.values():
                seen.extend(int(m.value) for m in messages)
        await consumer.stop()
        return seen

    broker = EmbeddedBroker(tmp_path / "logs", "disk", disk_dir=tmp_path / "broker").start()
    try:
        first_id = broker_id(broker.bootstrap_servers)
        first = asyncio.run(produce_and_consume_half(broker.bootstrap_servers))
        broker.process.kill()            # kill -9: no clean shutdown
        broker.process.wait()
        broker.stop()
        broker = EmbeddedBroker(tmp_path / "logs", "disk", disk_dir=tmp_path / "broker", port=broker.port).start()
        assert broker_id(broker.bootstrap_servers) == first_id
        rest = asyncio.run(consume_rest(broker.bootstrap_servers))
    finally:
        broker.stop()
    assert len(first) == 400 and sorted(first + rest) == list(range(1000)), "a record lost or read twice"

    memory = EmbeddedBroker(tmp_path / "memory-logs").start()
    try:
        memory_id = broker_id(memory.bootstrap_servers)
    finally:
        memory.stop()
    memory = EmbeddedBroker(tmp_path / "memory-logs", port=memory.port).start()
    try:
        assert broker_id(memory.bootstrap_servers) != memory_id, "a memory broker's restart must not look the same"
    finally:
        memory.stop()


def test_connector_positions_of_another_broker_are_not_trusted(settings, tmp_path):
    """Positions committed on a broker that lost its data: the run says so and reads the file again,
    instead of "read 0 ... reconciled" over records that are gone."""
    source = write_web_orders(tmp_path / "orders.jsonl", 50)

    def run_on_fresh_memory_broker():
        with EmbeddedBroker(tmp_path / f"logs-{time.monotonic_ns()}") as broker:
            here = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})})
            config = channel_config(here, tmp_path, "web-orders", create_topics=False)
            first = asyncio.run(run_connector(here, broker.bootstrap_servers, config, source))
            again = asyncio.run(run_connector(here, broker.bootstrap_servers, config, source))
            return first, again

    first, again = run_on_fresh_memory_broker()
    assert (first.read, first.accepted, again.read) == (50, 50, 0)  # same broker: resumes after the 50
    lost, _ = run_on_fresh_memory_broker()                            # the broker restarted without its data
    assert lost.read == 50 and lost.accepted == 50 and lost.reconciles
    assert lost.restarted_because and "does not hold those records" in lost.summary()
    assert "resumed after" not in lost.summary()


# --- 3. nothing was supervised ----------------------------------------------------------------------

def embedded(settings, tmp_path: Path, storage: str = "disk"):
    """These settings with the hub's own embedded broker (the session's broker is shared by tests)."""
    return settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"bootstrap_servers": None, "embedded_storage": storage}),
        "data_dir": tmp_path / "hub"})


def test_the_hub_starts_its_broker_again_when_a_port_it_chose_was_taken(settings, tmp_path, monkeypatch, caplog):
    """The hub launches its broker from the main thread and waits for it in another: a port taken between the
    choice and tansu's start makes it choose again there too, and the pipeline runs on the new port."""
    own = embedded(settings, tmp_path)

    async def scenario(busy):
        async with Hub(own, start_worker=False) as hub:
            assert busy not in (hub.broker.port, hub.broker.store_port)
            await produce_records(own.model_copy(update={"kafka": own.kafka.model_copy(update={"bootstrap_servers": hub.bootstrap})}),
                                  own.topics.customer_timeline, "timeline_event", [timeline_record(i) for i in range(10)])
            await wait_until(lambda: stored_count(hub) == 10, 60, "rows through the broker on its new port")
            return hub.broker.port

    with first_port_choice_taken(monkeypatch) as (busy, chosen):
        with caplog.at_level("WARNING", logger="infra.broker"):
            port = asyncio.run(scenario(busy))
    assert len(chosen) == 2
    assert [r.getMessage() for r in caplog.records if r.name == "infra.broker" and r.levelname == "WARNING"] == \
        [f"embedded broker: port {busy} or {chosen[0][1]} was taken before it could listen; starting again on {port}"]


def test_crashed_children_are_restarted_and_one_that_keeps_failing_stops_the_hub(settings, tmp_path):
    own = embedded(settings, tmp_path)
    topic = channel_topic(own, "orders")

    async def scenario():
        async with Hub(own, policy=RestartPolicy(max_restarts=2, window_seconds=120, backoff_initial=0.2)) as hub:
            children = {child.state.name: child for child in hub.supervisor.children}
            assert set(children) == {"object-store", "broker", "worker"}
            # each in a session of its own: Linux schedules the worker as a group, not as one of the hub's threads
            assert all(os.getsid(child.process.pid) == child.process.pid != os.getsid(0) for child in children.values())
            children["worker"].process.kill()
            children["broker"].process.kill()
            await wait_until(lambda: all(c.state.restarts == 1 and c.state.state == "running"
                                         for name, c in children.items() if name != "object-store"), 60,
                             "the worker and the broker restarted")
            status = {c["name"]: c for c in hub.status()["components"]}
            # The restarted broker still has the topics, and the pipeline still flows.
            ensure_topics(hub.bootstrap, [topic], own.topics.partitions, 1)
            await produce_records(own.model_copy(update={"kafka": own.kafka.model_copy(update={"bootstrap_servers": hub.bootstrap})}),
                                  own.topics.customer_timeline, "timeline_event", [timeline_record(i) for i in range(10)])
            await wait_until(lambda: stored_count(hub) == 10, 60, "rows through the restarted broker")
            # A worker that dies at every start: the third failure within the window stops the hub.
            for _ in range(2):
                await wait_until(lambda: children["worker"].process.poll() is None, 30, "the worker running")
                children["worker"].process.kill()
                await asyncio.sleep(0.5)
            with pytest.raises(ChildKeepsFailing) as failure:
                await asyncio.wait_for(hub.wait(), 30)
            return status, str(failure.value)

    status, failure = asyncio.run(scenario())
    assert status["worker"]["last_exit"] == "killed by SIGKILL" and status["worker"]["restarts"] == 1
    assert status["broker"]["last_exit"] == "killed by SIGKILL"
    assert failure.startswith("worker keeps failing (3 times in 120 s); last: killed by SIGKILL")


def test_children_die_with_a_killed_hub_and_its_state_file_is_known_stale(settings, tmp_path):
    own = embedded(settings, tmp_path)
    own = own.model_copy(update={"clickhouse": own.clickhouse.model_copy(update={"embedded_path": tmp_path / "hub-chdb"})})
    env = child_environment(own, "")
    env.pop("OMNIHUB_KAFKA")
    env["OMNIHUB_KAFKA__EMBEDDED_STORAGE"] = "disk"
    state_file = own.data_dir / "hub.json"
    hub = subprocess.Popen([sys.executable, "-m", "infra.cli", "run"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not (state_file.exists() and len(json.loads(state_file.read_text())["components"]) == 4):
        assert hub.poll() is None and time.monotonic() < deadline, "hub did not start"
        time.sleep(0.2)
    children = [c["pid"] for c in json.loads(state_file.read_text())["components"] if c.get("pid")]
    assert len(children) == 3
    hub.kill()
    hub.wait()
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in children):
        assert time.monotonic() < deadline, "a child outlived its hub"
        time.sleep(0.1)
    status = subprocess.run([sys.executable, "-m", "infra.cli", "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 1
    assert f"names a hub (pid {hub.pid}) that is not running" in status.stderr


# --- 4. one record stopped a connector --------------------------------------------------------------

def poison_lines() -> dict[int, str]:
    """Records that each stopped a file connector before: line number -> raw line."""
    def order(**changes) -> str:
        return json.dumps(web_order(900) | changes)
    return {2: order(lines=[{"sku": "S", "qty": 1, "unit_price": "1.00"}]).replace('"qty": 1', '"qty": Infinity'),
            4: order(order_id="W-" + "9" * 2_000_000),          # larger than the broker takes in one record
            6: "[" * 100_000 + "]" * 100_000,                    # deeper than Python's JSON parser recurses
            8: order(order_id="W-\\ud800").replace("\\\\ud800", "\\ud800"),  # a lone surrogate
            10: "NaN"}


def test_no_record_stops_a_file_connector(settings, tmp_path):
    source = write_web_orders(tmp_path / "poison.jsonl", 20, malformed_lines=poison_lines())
    with source.open("ab") as out:
        out.write(b'{"order_id": "P-4", "bad": "\xff\xfe"}\n')
    csv_source = tmp_path / "store.csv"
    store_config = channel_config(settings, tmp_path, "store-sales")
    bundled_sample = Path(yaml.safe_load(store_config.read_text())["source"]["path"])
    lines = bundled_sample.read_bytes().splitlines(keepends=True)
    csv_source.write_bytes(lines[0] + lines[1] + lines[2].replace(b";", b";\xff", 1) + b"".join(lines[3:]))
    config = channel_config(settings, tmp_path, "web-orders")

    async def scenario():
        report = await run_connector(settings, settings.kafka.bootstrap_servers, config, source)
        again = await run_connector(settings, settings.kafka.bootstrap_servers, config, source)
        csv_report = await run_connector(settings, settings.kafka.bootstrap_servers, store_config, csv_source)
        letters = await read_topic(settings, settings.kafka.bootstrap_servers, settings.topics.dead_letters)
        return report, again, csv_report, letters

    report, again, csv_report, letters = asyncio.run(scenario())
    assert report.read == 26 and report.accepted == 20 and report.rejected == 6 and report.reconciles
    assert again.read == 0 and again.resumed_at == "line 26"          # the position is clean past every poison
    decode = codec("dead_letter").decode
    reasons = {d["position"]: d["error"] for d in (decode(m.value) for m in letters) if d["source"] == str(source.resolve())}
    assert len(reasons) == 6
    assert "more than the broker takes" in reasons["line 4"] and "nested deeper" in reasons["line 6"]
    assert "not valid UTF-8: byte 0xff" in reasons["line 26"]
    assert csv_report.reconciles and csv_report.rejected >= 1
    assert any("not valid utf-8: byte 0xff" in reason for reason in csv_report.reasons), csv_report.reasons
    big = [d for d in (decode(m.value) for m in letters) if d["position"] == "line 4"][0]
    assert big["identifier_tokens"], "it names a customer: its raw record is sealed for them"
    raw = open_vault(settings).open(big["raw"])
    assert len(raw) == 64 * 1024, "the dead letter keeps the head of a record too large for the broker"


def test_webhook_answers_every_bad_request_without_a_500(settings, tmp_path):
    config = channel_config(settings, tmp_path, "app-sessions", port=0)
    from connectors.runtime import Connector
    from connectors.webhook import Webhook

    session = json.loads(Path(yaml.safe_load(config.read_text())["source"]["sample"]).read_text().splitlines()[0])

    async def scenario():
        webhook = await Webhook(Connector(settings, settings.kafka.bootstrap_servers, config)).start()
        answers = []
        try:
            async with aiohttp.ClientSession() as http:
                async def post(body, content_type="application/json", request_id=None):
                    headers = {"Content-Type": content_type, **({"X-Request-Id": request_id} if request_id else {})}
                    async with http.post(webhook.address, data=body, headers=headers) as response:
                        answers.append((response.status, await response.json()))
                await post("<xml/>", "application/xml")
                await post("a=1", "application/x-www-form-urlencoded")
                await post(json.dumps(session), "text/plain")
                await post("[" * 50_000 + "]" * 50_000)
                await post(b'{"session_id": "\xff"}')
                await post('{"session_id": "S-\\udc00"}')
                await post(json.dumps(session | {"screens": float("inf")}).replace("Infinity", "1e999"))
                for variant in ("A", "B", "C"):  # three different bad records under one request id
                    await post(json.dumps({"session_id": f"bad-{variant}", "screens": "many"}), request_id="same")
        finally:
            await webhook.stop()
        letters = await read_topic(settings, settings.kafka.bootstrap_servers, settings.topics.dead_letters)
        return answers, webhook.report, letters

    answers, report, letters = asyncio.run(scenario())
    assert [status for status, _ in answers[:3]] == [415, 415, 415]
    assert all(status in (200, 400, 422) for status, _ in answers[3:]), answers
    assert report.read == 7 and report.reconciles
    same = [m for m in letters if dict(m.headers)["position"] == b"request same item 0"]
    assert len(same) == 3, "a reused request id hid a different record"


# --- 5. a new channel was not read ------------------------------------------------------------------

def test_a_channel_first_run_while_the_hub_is_up_reaches_clickhouse(settings, tmp_path):
    ensure_topics(settings.kafka.bootstrap_servers, [channel_topic(settings, "orders")], settings.topics.partitions, 1)

    async def scenario():
        async with Hub(settings) as hub:
            await asyncio.sleep(3)  # the worker is up, reading the channel topics that exist
            config = tmp_path / "returns.yaml"
            topic = channel_topic(settings, "returns")
            config.write_text(yaml.safe_dump({
                "name": "returns", "channel": "returns", "topic": topic, "source": {"type": "file", "path": "returns.jsonl"},
                "fields": {"event_type": {"const": "product_return"}, "source_id": "return_id",
                           "occurred_at": {"path": "at", "format": "iso8601"}, "total_minor": {"path": "refund", "amount": "decimal"}},
                "identifiers": [{"kind": "email", "path": "email"}]}))
            (tmp_path / "returns.jsonl").write_text("".join(
                json.dumps({"return_id": f"R{i}", "at": "2026-11-20T10:00:00+00:00", "refund": "12.50",
                            "email": f"p{i}@x.fr"}) + "\n" for i in range(30)))
            started = time.monotonic()
            report = await run_connector(settings, hub.bootstrap, config)
            count = lambda: hub.client.query("SELECT count() FROM timeline_events FINAL WHERE channel = 'returns'").result_rows[0][0]
            await wait_until(lambda: count() == 30, 60, "the new channel's events in ClickHouse")
            return report, time.monotonic() - started, {c.state.name: c.state for c in hub.supervisor.children}

    report, seconds, children = asyncio.run(scenario())
    assert report.accepted == 30
    assert children["worker"].restarts == 0, "a requested restart is not a failure"
    print(f"new channel queryable {seconds:.1f} s after its connector started")
