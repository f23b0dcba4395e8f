"""End to end on real servers: file -> connector -> channel topic -> Faust worker -> customer-timeline -> sink -> ClickHouse."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from connectors.runtime import run_connector
from infra.hub import Hub
from infra.kafka import read_topic
from sinks.migrate import migrate
from tests.fixtures import channel_config, web_order, write_web_orders

pytestmark = pytest.mark.integration


async def wait_for(condition, timeout: float, what: str, hub: Hub | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            log = hub.worker.log_file.read_text()[-3000:] if hub and hub.worker else ""
            raise AssertionError(f"timed out waiting for {what}\nworker log tail:\n{log}")
        await asyncio.sleep(0.3)


def counts(hub: Hub) -> tuple[int, int, int]:
    """(rows as analysts see them, distinct event ids, rows physically stored before dedup)."""
    row = hub.client.query("SELECT (SELECT count() FROM timeline_events FINAL), uniqExact(event_id), count() "
                           "FROM timeline_events").result_rows[0]
    return tuple(row)


def test_every_order_once_in_clickhouse_and_malformed_lines_dead_lettered(settings, tmp_path):
    bad_lines = {
        3: '{"order_id": "W-broken", "created_at": ',                       # truncated JSON
        7: json.dumps(web_order(999_001) | {"created_at": "2026-11-20 09:00:00"}),  # no time zone
        9: json.dumps(web_order(999_002) | {"customer": {}}),              # no identifier
    }
    source = write_web_orders(tmp_path / "orders.jsonl", 200, malformed_lines=bad_lines)
    config = channel_config(settings, tmp_path, "web-orders")

    async def scenario():
        async with Hub(settings) as hub:
            report = await run_connector(settings, hub.bootstrap, config, source)
            assert (report.read, report.accepted, report.rejected) == (203, 200, 3)
            assert report.reconciles
            await wait_for(lambda: counts(hub)[0] >= 200, 90, "200 orders in ClickHouse", hub)
            await wait_for(lambda: hub.client.query("SELECT count() FROM dead_letters FINAL").result_rows[0][0] >= 3,
                           30, "3 dead letters in ClickHouse", hub)
            await asyncio.sleep(1.0)  # a late duplicate would land within a batch interval
            stored = hub.client.query("SELECT source_id FROM timeline_events FINAL").result_rows
            letters = dict(hub.client.query("SELECT position, error FROM dead_letters FINAL").result_rows)
            return report, counts(hub), sorted(r[0] for r in stored), letters

    report, (visible, distinct, _), stored_ids, letters = asyncio.run(scenario())
    assert visible == distinct == 200
    assert stored_ids == sorted(f"W-{i:08d}" for i in range(200))
    assert set(letters) == {"line 3", "line 7", "line 9"}
    assert "not valid JSON" in letters["line 3"]
    assert "no time zone" in letters["line 7"]
    assert "no customer identifier" in letters["line 9"]


def test_worker_killed_mid_stream_loses_and_duplicates_nothing(settings, tmp_path):
    first = write_web_orders(tmp_path / "first.jsonl", 3000, start=0)
    second = write_web_orders(tmp_path / "second.jsonl", 3000, start=3000)
    config = channel_config(settings, tmp_path, "web-orders")

    async def scenario():
        async with Hub(settings) as hub:
            await run_connector(settings, hub.bootstrap, config, first)
            await wait_for(lambda: counts(hub)[0] > 0, 90, "the first orders in ClickHouse", hub)
            # Crash (SIGKILL: no offset commit, no clean leave) while the second half is being produced.
            producing = asyncio.create_task(run_connector(settings, hub.bootstrap, config, second))
            await asyncio.sleep(0.2)
            hub.worker.kill()
            killed_at = counts(hub)[0]
            await producing  # the hub's supervisor restarts the worker
            await wait_for(lambda: counts(hub)[0] >= 6000, 300, "6000 orders in ClickHouse after restart", hub)
            await asyncio.sleep(1.0)
            ids = hub.client.query("SELECT source_id FROM timeline_events FINAL").result_rows
            on_topic = len(await read_topic(settings, hub.bootstrap, settings.topics.customer_timeline))
            print(f"killed with {killed_at} rows in ClickHouse; {on_topic} timeline records on Kafka "
                  f"({on_topic - 6000} redelivered); ClickHouse (visible, distinct, physical) = {counts(hub)}")
            return killed_at, counts(hub), sorted(r[0] for r in ids)

    killed_at, (visible, distinct, _), ids = asyncio.run(scenario())
    assert killed_at < 6000, "the worker was killed after everything was processed: not mid-stream"
    assert visible == distinct == 6000
    assert ids == sorted(f"W-{i:08d}" for i in range(6000))


def test_migrations_are_idempotent_and_queries_are_read_only(settings):
    async def scenario():
        async with Hub(settings, start_worker=False) as hub:
            assert migrate(hub.client) == []  # Hub.start applied them already
            tables = {r[0] for r in hub.client.query("SHOW TABLES").result_rows}
            assert {"timeline_events", "dead_letters", "schema_migrations"} <= tables
            if hub.query_server is None:
                return None
            def post(sql):
                request = urllib.request.Request(hub.query_server.address + "/query", method="POST",
                                                 data=json.dumps({"sql": sql}).encode())
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        return response.status, json.loads(response.read())
                except urllib.error.HTTPError as error:
                    return error.code, json.loads(error.read())
            return post("SELECT count() AS n FROM timeline_events"), post("DROP TABLE timeline_events")

    answers = asyncio.run(scenario())
    if answers is None:
        pytest.skip("the query endpoint exists only for embedded ClickHouse")
    (ok_status, ok_body), (drop_status, drop_body) = answers
    assert ok_status == 200 and ok_body == {"columns": ["n"], "rows": [[0]]}
    assert drop_status == 403 and "only reading statements" in drop_body["error"]
