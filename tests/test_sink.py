"""The ClickHouse sink under failure, on the real engine: inserts refused for 30 s, and the sink
stopped between an insert and its offset commit. Failures are injected between the sink and the
clickhouse-connect client; ClickHouse itself is real."""
from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from aiokafka import AIOKafkaProducer

from infra.clickhouse import LockedClient, open_client
from infra.kafka import ensure_topics
from schemas.serde import codec
from sinks.clickhouse_sink import ClickHouseSink
from sinks.migrate import migrate

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)


class FlakyClient:
    """Forwards to the real client; refuses inserts until `until` (monotonic), and can run a hook after
    each successful insert (to stop the sink between its insert and its commit)."""

    def __init__(self, client, until: float = 0.0, after_insert=None):
        self.client, self.until, self.after_insert = client, until, after_insert
        self.refused = 0
        self.inserts = 0

    def insert(self, *args, **kwargs):
        if time.monotonic() < self.until:
            self.refused += 1
            raise ConnectionError("injected: ClickHouse unavailable")
        result = self.client.insert(*args, **kwargs)
        self.inserts += 1
        if self.after_insert:
            self.after_insert(self.inserts)
        return result

    def __getattr__(self, name):
        return getattr(self.client, name)


def timeline_event(i: int) -> dict:
    return {"event_id": f"e-{i:06d}", "event_time": T0 + timedelta(seconds=i), "channel": "web", "event_type": "order",
            "customer_id": f"c-{i % 50}", "source_id": f"W-{i}", "identifiers": [], "amount_minor": 100 + i,
            "currency": "EUR", "payload_json": "{}"}


async def produce_timeline(settings, count: int) -> None:
    ensure_topics(settings.kafka.bootstrap_servers, settings.topics.all_names(), settings.topics.partitions, 1)
    encode = codec("timeline_event").encode
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(settings.topics.customer_timeline, encode(timeline_event(i)),
                                                   key=f"c-{i % 50}".encode()) for i in range(count)])
    finally:
        await producer.stop()


def stored(client) -> tuple[int, int, int]:
    return tuple(client.query("SELECT (SELECT count() FROM timeline_events FINAL), uniqExact(event_id), "
                              "sum(amount_minor) FROM timeline_events FINAL").result_rows[0])


def start_sink(settings, client, **sink_settings) -> tuple[asyncio.Task, asyncio.Event, ClickHouseSink]:
    tuned = settings.model_copy(update={"sink": settings.sink.model_copy(update=sink_settings)})
    stop = asyncio.Event()
    sink = ClickHouseSink(tuned, settings.kafka.bootstrap_servers, client)
    return asyncio.create_task(sink.run(stop)), stop, sink


async def wait_until_stored(client, count: int, timeout: float, sink: ClickHouseSink | None = None) -> None:
    deadline = time.monotonic() + timeout
    while stored(client)[0] < count:
        assert time.monotonic() < deadline, (stored(client), sink and sink.stats)
        await asyncio.sleep(0.3)


@pytest.fixture
def client(settings):
    client = LockedClient(open_client(settings))
    migrate(client)
    return client


def test_inserts_refused_for_30_seconds_then_everything_arrives_once(settings, client):
    count = 2000
    flaky = FlakyClient(client, until=time.monotonic() + 30)

    async def scenario():
        await produce_timeline(settings, count)
        task, stop, sink = start_sink(settings, flaky, retry_max_seconds=2.0)
        await wait_until_stored(client, count, 90, sink)
        stop.set()
        return await task

    stats = asyncio.run(scenario())
    assert flaky.refused >= 10 and stats.insert_failures == flaky.refused  # retried with backoff for 30 s
    assert stored(client) == (count, count, sum(100 + i for i in range(count)))


def test_sink_stopped_between_insert_and_commit_replays_without_duplicates(settings, client):
    count = 3000
    inserted_once = threading.Event()

    def hold_first_insert(n: int) -> None:
        if n == 1:  # hold the sink between its first insert and its commit while the test kills it
            inserted_once.set()
            time.sleep(1.0)

    flaky = FlakyClient(client, after_insert=hold_first_insert)

    async def scenario():
        await produce_timeline(settings, count)
        task, _, _ = start_sink(settings, flaky, batch_max_rows=1000)
        while not inserted_once.is_set():
            await asyncio.sleep(0.001)
        task.cancel()  # killed: its first batch is in ClickHouse, its offsets were never committed
        with pytest.raises(asyncio.CancelledError):
            await task
        in_clickhouse_when_killed = stored(client)[0]
        again, stop, _ = start_sink(settings, client, batch_max_rows=1000)
        await wait_until_stored(client, count, 60)
        await asyncio.sleep(1.0)  # a late duplicate would land within a batch interval
        stop.set()
        return in_clickhouse_when_killed, await again

    in_clickhouse_when_killed, restarted = asyncio.run(scenario())
    assert 0 < in_clickhouse_when_killed < count
    assert restarted.timeline_rows == count  # the restarted sink wrote the uncommitted batch again...
    assert stored(client) == (count, count, sum(100 + i for i in range(count)))   # ...and it is seen once
