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
from streams.profiles import empty, to_avro

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


class QueryCountingClient:
    """Forwards to the real client; keeps the text of every query."""

    def __init__(self, client):
        self.client, self.queries = client, []

    def query(self, sql, *args, **kwargs):
        self.queries.append(sql)
        return self.client.query(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def timeline_event(i: int) -> dict:
    return {"event_id": f"e-{i:06d}", "event_time": T0 + timedelta(seconds=i), "channel": "web", "event_type": "order",
            "customer_id": f"c-{i % 50}", "source_id": f"W-{i}", "identifiers": [], "amount_minor": 100 + i,
            "currency": "EUR", "payload_json": "{}"}


async def produce_timeline(settings, count: int) -> None:
    ensure_topics(settings.kafka.bootstrap_servers, settings.topics.all_names(), settings.topics.partitions, 1)
    await produce_records(settings, settings.topics.customer_timeline, "timeline_event",
                          [timeline_event(i) for i in range(count)], key=lambda record: record["customer_id"])


async def produce_records(settings, topic: str, schema: str, records: list[dict], key=None,
                          timestamp_ms: int | None = None) -> list[tuple[int, int]]:
    """Sends records (key: record -> str, else their index); returns each one's (partition, offset)."""
    encode = codec(schema).encode
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, encode(record), key=(key(record) if key else str(i)).encode(),
                                    timestamp_ms=timestamp_ms)
                for i, record in enumerate(records)]
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*sent)]
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
    times = client.query("SELECT toUnixTimestamp64Milli(min(event_time)), toUnixTimestamp64Milli(max(event_time)) "
                         "FROM timeline_events").result_rows[0]
    first = int(T0.timestamp() * 1000)
    assert times == (first, first + (count - 1) * 1000), times  # as published, to the millisecond


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


def test_a_backlog_makes_longer_batches_until_it_is_cleared(settings, client, caplog):
    """Timeline records carry when their event was accepted upstream: events that waited longer than
    sink.backlog_seconds make the next batch gather for backlog_batch_max_seconds; fresh ones end that."""
    ensure_topics(settings.kafka.bootstrap_servers, settings.topics.all_names(), settings.topics.partitions, 1)
    waves = [(0, 200, 120), (200, 400, 120), (400, 600, 0), (600, 800, 0)]   # events, seconds they waited upstream
    counted = []
    counting = QueryCountingClient(client)

    async def scenario():
        task, stop, sink = start_sink(settings, counting, batch_max_seconds=0.3, backlog_seconds=5.0,
                                      backlog_batch_max_seconds=1.0)
        for first, end, waited in waves:
            await produce_records(settings, settings.topics.customer_timeline, "timeline_event",
                                  [timeline_event(i) for i in range(first, end)], key=lambda record: record["customer_id"],
                                  timestamp_ms=int((time.time() - waited) * 1000))
            await wait_until_stored(client, end, 60, sink)
            while sink.stats.records_read < end:   # the batch is committed and counted
                await asyncio.sleep(0.05)
            counted.append(sink.stats.backlog_batches)
        stop.set()
        return await task

    with caplog.at_level("INFO", logger="sinks.clickhouse_sink"):
        stats = asyncio.run(scenario())
    # wave 1 shows the backlog; waves 2 (old) and 3 (fresh, seen only once read) are gathered with the long window;
    # wave 3 clears it, so wave 4 is not
    assert counted[1] > counted[0] and counted[2] > counted[1] and counted[3] == counted[2], counted
    assert stats.records_read == 800 and stored(client) == (800, 800, sum(100 + i for i in range(800)))
    # the column types are read once, not before every insert (a round trip to a server each)
    assert stats.batches >= 4 and [q for q in counting.queries if q.startswith("DESCRIBE")] == ["DESCRIBE TABLE timeline_events"]
    said = [r.getMessage() for r in caplog.records if r.name == "sinks.clickhouse_sink"]
    assert sum("until the backlog is cleared" in line for line in said) == 1, said
    assert sum("backlog cleared" in line and "until" not in line for line in said) == 1, said


def campaign_record(campaign_id: str, expected_extra_visitors: int) -> dict:
    return {"campaign_id": campaign_id, "name": campaign_id, "starts_at": T0, "ends_at": T0 + timedelta(days=1),
            "audience_segment": "best_customers", "channels": ["tv"], "discount_code": None,
            "media_cost_minor": 100_000, "currency": "EUR", "expected_extra_visitors": expected_extra_visitors}


def test_rows_clickhouse_refuses_are_dead_lettered_with_the_reason_and_the_rest_is_stored(settings, client):
    ensure_topics(settings.kafka.bootstrap_servers, settings.topics.all_names(), settings.topics.partitions, 1)
    count = 1000
    events = [timeline_event(i) for i in range(count)]
    wrong_clock = {137: datetime(2150, 1, 1, tzinfo=timezone.utc), 555: datetime(1999, 12, 31, tzinfo=timezone.utc),
                   556: datetime(2150, 6, 1, tzinfo=timezone.utc)}  # refused by the event_time_plausible constraint
    for i, when in wrong_clock.items():
        events[i]["event_time"] = when
    campaigns = [campaign_record("spring", 1000), campaign_record("minus", -5), campaign_record("autumn", 0)]  # UInt64

    async def scenario():
        event_positions = await produce_records(settings, settings.topics.customer_timeline, "timeline_event", events)
        campaign_positions = await produce_records(settings, settings.topics.campaigns, "campaign", campaigns)
        task, stop, sink = start_sink(settings, client, batch_max_rows=400)
        await wait_until_stored(client, count - len(wrong_clock), 60, sink)
        deadline = time.monotonic() + 30
        while sink.stats.records_read < count + len(campaigns):
            assert time.monotonic() < deadline and not task.done(), sink.stats
            await asyncio.sleep(0.2)
        stop.set()
        first = await task
        # A restarted sink of the same group reads only what came after: the refused rows' batches were committed.
        await produce_records(settings, settings.topics.customer_timeline, "timeline_event", [timeline_event(count)])
        task, stop, again = start_sink(settings, client)
        await wait_until_stored(client, count - len(wrong_clock) + 1, 60, again)
        stop.set()
        return event_positions, campaign_positions, first, await task

    event_positions, campaign_positions, first, second = asyncio.run(scenario())
    assert first.insert_failures == 0  # refused rows are not an outage: nothing was retried
    assert first.records_refused == len(wrong_clock) + 1
    assert first.records_read == count + len(campaigns) == first.timeline_rows + 2 + first.records_refused
    assert second.records_read == 1
    good = [i for i in range(count + 1) if i not in wrong_clock]
    assert stored(client) == (len(good), len(good), sum(100 + i for i in good))
    assert sorted(r[0] for r in client.query("SELECT campaign_id FROM campaigns FINAL").result_rows) == ["autumn", "spring"]

    letters = client.query("SELECT component, source, position, error, raw FROM dead_letters FINAL ORDER BY position",
                           column_formats={"raw": "bytes"}).result_rows
    by_position = {(component, position): (source, error, raw) for component, source, position, error, raw in letters}
    assert len(letters) == len(wrong_clock) + 1
    decode = codec("timeline_event").decode
    for i in wrong_clock:
        partition, offset = event_positions[i]
        source, error, raw = by_position[("sink:clickhouse:timeline_events", f"partition {partition} offset {offset}")]
        assert source == settings.topics.customer_timeline
        assert "VIOLATED_CONSTRAINT" in error and "event_time_plausible" in error
        assert decode(raw)["event_id"] == events[i]["event_id"]  # the record as it was on Kafka
    partition, offset = campaign_positions[1]
    source, error, _ = by_position[("sink:clickhouse:campaigns", f"partition {partition} offset {offset}")]
    assert source == settings.topics.campaigns and "expected_extra_visitors" in error


def test_erasure_removes_what_people_wrote_and_leaves_the_totals(settings, client):
    """Free text and attributes are stored apart (event_details); an erasure deletes them, and strips
    them from events stored before they were kept apart (payload_json with text, written directly here)."""
    ensure_topics(settings.kafka.bootstrap_servers, settings.topics.all_names(), settings.topics.partitions, 1)
    written = timeline_event(1) | {"customer_id": "c-gone", "channel": "support", "event_type": "ticket_update",
                                   "amount_minor": None, "currency": None,
                                   "payload_json": '{"status":"open","text":"Call me on 0612345678","attributes":{"agent":"Bo"}}'}
    kept = timeline_event(2) | {"customer_id": "c-stays", "payload_json": '{"text":"Lovely shop"}'}
    client.insert("timeline_events", [["e-legacy", T0, "support", "ticket_update", "c-gone", "T-0", None, None,
                                       '{"status":"closed","text":"My address is 1 rue X"}', "legacy", 0, 0]],
                  column_names=["event_id", "event_time", "channel", "event_type", "customer_id", "source_id",
                                "amount_minor", "currency", "payload_json", "kafka_topic", "kafka_partition", "kafka_offset"])

    def personal() -> tuple[str, str]:
        """(event_details, the events' payloads), as text."""
        return (repr(client.query("SELECT customer_id, text, attributes_json FROM event_details FINAL").result_rows),
                repr(client.query("SELECT payload_json FROM timeline_events FINAL").result_rows))

    async def scenario():
        await produce_records(settings, settings.topics.customer_timeline, "timeline_event", [written, kept])
        task, stop, sink = start_sink(settings, client)
        await wait_until_stored(client, 3, 60, sink)
        deadline = time.monotonic() + 60
        while sink.stats.records_read < 2:   # its batch stored whole: event_details is inserted after the timeline
            assert time.monotonic() < deadline and not task.done(), sink.stats
            await asyncio.sleep(0.1)
        before = personal()
        await produce_records(settings, settings.topics.customer_erasures, "customer_erasure", [
            {"customer_id": "c-gone", "customer_ids": ["c-gone"], "identifiers_removed": 1, "reason": "test", "at": T0}])
        deadline = time.monotonic() + 60
        while "0612345678" in repr(personal()) or "rue X" in repr(personal()):
            assert time.monotonic() < deadline and not task.done(), personal()
            await asyncio.sleep(0.3)
        stop.set()
        await task
        return before, personal()

    (details, payloads), (details_after, payloads_after) = asyncio.run(scenario())
    assert "Call me on 0612345678" in details and '"agent":"Bo"' in details and "Lovely shop" in details
    assert "Call me" not in payloads and "Lovely" not in payloads     # the sink kept them apart
    assert "rue X" in payloads                                         # the event stored before that
    assert "c-gone" not in details_after and "rue X" not in payloads_after
    assert "Lovely shop" in details_after                              # someone else's stays
    assert '{"status":"closed"}' in payloads_after and '{"status":"open"}' in payloads_after  # what tickets need stays


def test_chained_merges_in_one_batch_leave_every_id_meaning_the_last_survivor(settings, client):
    """X into A, A into B, B into C in one batch (one read for the batch): X, A and B all mean C; the same
    merges read again change nothing."""
    ensure_topics(settings.kafka.bootstrap_servers, settings.topics.all_names(), settings.topics.partitions, 1)
    merges = [{"action": "merge", "surviving_id": kept, "absorbed_id": gone, "identifier": f"email:{gone}",
               "event_id": f"e-{n}", "version": n + 2, "at": T0 + timedelta(seconds=n)}
              for n, (gone, kept) in enumerate([("X", "A"), ("A", "B"), ("B", "C")])]

    def meaning() -> dict:
        return dict(client.query("SELECT customer_id, current_id FROM identity_map FINAL").result_rows)

    async def scenario():
        await produce_records(settings, settings.topics.identity_merges, "identity_merge", merges, key=lambda m: "one")
        task, stop, sink = start_sink(settings, client)
        deadline = time.monotonic() + 60
        while sink.stats.identity_map_rows < 6:
            assert time.monotonic() < deadline and not task.done(), sink.stats
            await asyncio.sleep(0.2)
        first = meaning()
        await produce_records(settings, settings.topics.identity_merges, "identity_merge", merges, key=lambda m: "one")
        while sink.stats.identity_map_rows < 12:
            assert time.monotonic() < deadline and not task.done(), sink.stats
            await asyncio.sleep(0.2)
        stop.set()
        await task
        return first, meaning(), sink.stats

    first, again, stats = asyncio.run(scenario())
    assert first == again == {"X": "C", "A": "C", "B": "C"}, (first, again)
    assert stats.batches >= 2


class CountingClient:
    """Forwards to the real client and counts the rows inserted into each table."""

    def __init__(self, client):
        self.client = client
        self.rows: dict[str, int] = {}

    def insert(self, table, rows, *args, **kwargs):
        self.rows[table] = self.rows.get(table, 0) + len(rows)
        return self.client.insert(table, rows, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_identities_row_is_written_when_a_customers_identifiers_change_and_again_after_a_tombstone(settings, client):
    """A profile is republished at nearly every event; its customer_identities row is rewritten only when the
    identifiers change, and again after the customer was tombstoned. What ClickHouse holds stays exact."""
    ensure_topics(settings.kafka.bootstrap_servers, settings.topics.all_names(), settings.topics.partitions, 1)
    encode = codec("customer_profile").encode

    def profile(customer_id: str, identifiers: list[str]) -> bytes:
        record = to_avro(empty(customer_id), identifiers, 1, 365, None)
        record["sealed_identifiers"] = []  # identifiers in clear, as before they were sealed
        return encode(record)

    records = [("c", profile("c", ["email:a@x.org"])), ("c", profile("c", ["email:a@x.org"])),
               ("d", profile("d", ["email:d@x.org"])), ("c", profile("c", ["email:a@x.org", "phone:+33600000001"])),
               ("c", profile("c", ["email:a@x.org", "phone:+33600000001"])), ("d", None),
               ("d", profile("d", ["email:d@x.org"]))]
    counting = CountingClient(client)

    async def scenario():
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for n, (key, value) in enumerate(records):  # one millisecond apart: the newest row wins
                await producer.send_and_wait(settings.topics.customer_profiles, value, key=key.encode(),
                                             timestamp_ms=int(T0.timestamp() * 1000) + n)
        finally:
            await producer.stop()
        task, stop, sink = start_sink(settings, counting)
        deadline = time.monotonic() + 60
        while sink.stats.records_read < len(records):
            assert time.monotonic() < deadline and not task.done(), sink.stats
            await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(scenario())
    held = {row[0]: (row[1], row[2]) for row in client.query(
        "SELECT customer_id, identifiers, deleted FROM customer_identities FINAL").result_rows}
    assert held == {"c": (["email:a@x.org", "phone:+33600000001"], 0), "d": (["email:d@x.org"], 0)}, held
    # c: its first identifiers, then the changed ones; d: first, its tombstone, then again after it
    assert counting.rows["customer_identities"] == 5, counting.rows
    assert counting.rows["customer_profiles"] == len(records)
    # each row's time is its Kafka record's (the sink passes epoch milliseconds to the DateTime64(3) columns)
    updated = dict(client.query("SELECT customer_id, toUnixTimestamp64Milli(updated_at) FROM customer_profiles FINAL").result_rows)
    first = int(T0.timestamp() * 1000)
    assert updated == {"c": first + 4, "d": first + 6}, updated
