"""The ClickHouse sink: unified topics to tables, in batches, offsets committed after the insert.

At-least-once: a batch is committed to Kafka only after ClickHouse accepted it, so a crash replays
it; the tables are ReplacingMergeTree keyed on the event's identity, so the replay is stored once.
Two kinds of failure are told apart (sinks/rejections.py):
- ClickHouse unavailable (connection refused, timeouts, overload): the same batch is retried with
  exponential backoff, for as long as it takes; nothing is committed meanwhile.
- ClickHouse refuses rows (a constraint, a value the column cannot hold): the batch is bisected
  until the refused rows are isolated; they go to dead_letters with ClickHouse's reason and the raw
  Kafka record, the rest is stored, and the batch is committed. records read = stored + refused.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from clickhouse_connect.datatypes.registry import get_from_name

from infra.kafka import consumer_config
from infra.settings import Settings
from infra.vault import open_vault
from schemas.models import dead_letter
from schemas.serde import codec
from sinks.rejections import is_row_rejection

log = logging.getLogger(__name__)

TIMELINE_COLUMNS = ["event_id", "event_time", "channel", "event_type", "customer_id", "source_id", "amount_minor",
                    "currency", "payload_json", "kafka_topic", "kafka_partition", "kafka_offset"]
DEAD_LETTER_COLUMNS = ["component", "source", "position", "error", "raw", "rejected_at", "identifier_tokens"]
IDENTITY_MAP_COLUMNS = ["customer_id", "current_id", "version", "merge_event", "identifier_token"]
PROFILE_COLUMNS = ["customer_id", "version", "merged_ids", "first_seen", "last_seen", "events", "online_orders",
                   "online_revenue_minor", "store_orders", "store_revenue_minor", "average_basket_minor", "repurchased",
                   "open_tickets", "last_contact_channel", "social_mentions", "sentiment", "best_customer"]
# Free text and channel details may name or locate the person: stored apart, in event_details.
PERSONAL_PAYLOAD_KEYS = ("text", "attributes")
PERSONAL_PAYLOAD_MARKERS = tuple(f'"{key}"' for key in PERSONAL_PAYLOAD_KEYS)   # made once, not per event
EVENT_DETAIL_COLUMNS = ["event_id", "customer_id", "event_time", "channel", "text", "attributes_json"]
IDENTITY_COLUMNS = ["customer_id", "identifiers", "deleted", "updated_at"]
IDENTITIES_REMEMBERED = 2_000_000  # customers whose identities row this process remembers writing (~150 bytes each)
CAMPAIGN_COLUMNS = ["campaign_id", "name", "starts_at", "ends_at", "audience_segment", "channels", "discount_code",
                    "media_cost_minor", "currency", "expected_extra_visitors"]


@dataclass
class SinkStats:
    batches: int = 0
    timeline_rows: int = 0
    dead_letter_rows: int = 0
    identity_map_rows: int = 0
    records_read: int = 0
    records_refused: int = 0  # records with a row ClickHouse refused, dead-lettered with the reason
    insert_failures: int = 0  # ClickHouse unavailable: the batch was retried
    backlog_batches: int = 0  # gathered with the backlog window (sink.backlog_batch_max_seconds)
    last_error: str | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class TableRows:
    """Rows for one table, each with the Kafka record it came from (to dead-letter it if refused)."""
    table: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    origins: list = field(default_factory=list)

    def add(self, row: list, origin) -> None:
        self.rows.append(row)
        self.origins.append(origin)

    def without(self, origins: set[int]) -> "TableRows":
        """These rows less those that came from the given records (by id())."""
        kept = [i for i, origin in enumerate(self.origins) if id(origin) not in origins]
        if len(kept) == len(self.rows):
            return self
        return TableRows(self.table, self.columns, [self.rows[i] for i in kept], [self.origins[i] for i in kept])


@dataclass
class Batch:
    """One poll's records turned into rows, in the order they are written."""
    profiles: TableRows = field(default_factory=lambda: TableRows("customer_profiles", PROFILE_COLUMNS + ["deleted", "updated_at"]))
    identities: TableRows = field(default_factory=lambda: TableRows("customer_identities", IDENTITY_COLUMNS))
    campaigns: TableRows = field(default_factory=lambda: TableRows("campaigns", CAMPAIGN_COLUMNS))
    timeline: TableRows = field(default_factory=lambda: TableRows("timeline_events", TIMELINE_COLUMNS))
    details: TableRows = field(default_factory=lambda: TableRows("event_details", EVENT_DETAIL_COLUMNS))
    dead: TableRows = field(default_factory=lambda: TableRows("dead_letters", DEAD_LETTER_COLUMNS))
    merges: list[tuple[dict, object]] = field(default_factory=list)
    erasures: list[dict] = field(default_factory=list)


def split_personal(payload_json: str) -> tuple[str, str | None, dict | None]:
    """(payload without personal keys, its free text, its attributes): the first goes to timeline_events,
    the others to event_details."""
    for marker in PERSONAL_PAYLOAD_MARKERS:
        if marker in payload_json:
            break
    else:  # most events: nothing to parse
        return payload_json, None, None
    payload = orjson.loads(payload_json)
    text, attributes = payload.pop("text", None), payload.pop("attributes", None)
    # orjson: the same compact UTF-8 JSON as json.dumps(separators=(",", ":"), ensure_ascii=False), 5x faster
    return orjson.dumps(payload).decode(), text, attributes


def dead_letter_row(component: str, message, error: str | Exception) -> list:
    letter = dead_letter(component, message.topic, f"partition {message.partition} offset {message.offset}", error,
                         message.value)
    return [letter[column] for column in DEAD_LETTER_COLUMNS]


class ClickHouseSink:
    def __init__(self, settings: Settings, bootstrap: str, client):
        self.settings = settings
        self.bootstrap = bootstrap
        self.client = client
        self.stats = SinkStats()
        registry = settings.schemas.registry_url
        # Times as epoch milliseconds, the DateTime64(3) columns' own ticks: clickhouse-connect writes ints as they
        # are, where a datetime was made by the decoder and taken apart again by the insert (bench_sink.py).
        self.timeline_codec = codec("timeline_event", registry, settings.topics.customer_timeline, timestamps_as_millis=True)
        self.dead_letter_codec = codec("dead_letter", registry, settings.topics.dead_letters)
        self.merge_codec = codec("identity_merge", registry, settings.topics.identity_merges)
        self.campaign_codec = codec("campaign", registry, settings.topics.campaigns)
        self.profile_codec = codec("customer_profile", registry, settings.topics.customer_profiles, timestamps_as_millis=True)
        self.erasure_codec = codec("customer_erasure", registry, settings.topics.customer_erasures)
        self.vault = open_vault(settings)  # opens what the worker sealed; a forgotten person's data no longer opens
        self.vault.read_ahead = True        # it opens nearly every key's data: keys are read in bulk (infra/vault.py)
        # customer id -> hash of the identifiers its customer_identities row was last built from, in this
        # process: a profile is published at nearly every event of its customer and its identifiers rarely
        # change; each profile meant opening them all again (AES, 3% of the sink in py-spy) and one more row
        # for ClickHouse to store and merge. Lost at a restart: the first profile writes again.
        self._identities_written: dict[str, int] = {}
        self._backlog = False   # the last batch's events waited upstream longer than sink.backlog_seconds
        # table -> column -> type, read once: given the types, clickhouse-connect inserts without a DESCRIBE first
        # (a round trip per table and batch to a server). The migrations ran before the sink started.
        self._column_types: dict[str, dict] = {}

    def _add_profile(self, batch: Batch, message) -> None:
        """A customer_profiles row and a customer_identities row: personal data goes to the second only."""
        updated = message.timestamp   # epoch milliseconds, as the profile's own times
        customer_id = message.key.decode()
        if message.value is None:  # tombstone: merged away or forgotten
            empty = [customer_id, 0, [], None, None, 0, 0, 0, 0, 0, 0, False, 0, None, 0, None, False]
            batch.profiles.add(empty + [1, updated], message)
            batch.identities.add([customer_id, [], 1, updated], message)
            self._identities_written.pop(customer_id, None)
            return
        profile = self.profile_codec.decode(message.value)
        batch.profiles.add([profile[column] for column in PROFILE_COLUMNS] + [0, updated], message)
        written = hash((*profile["sealed_identifiers"], *profile["identifiers"]))
        if self._identities_written.get(customer_id) == written:  # the row holds these already (a refused row
            return                                                # would be refused again: it is in dead letters)
        if len(self._identities_written) >= IDENTITIES_REMEMBERED:
            self._identities_written.clear()
        self._identities_written[customer_id] = written
        if profile["sealed_identifiers"]:
            identifiers = [value for sealed in profile["sealed_identifiers"] if (value := self.vault.open_text(sealed))]
        else:  # written before identifiers were sealed: kind:value in clear
            identifiers = profile["identifiers"]
        batch.identities.add([customer_id, identifiers, 0, updated], message)

    def _batch(self, messages) -> Batch:
        topics = self.settings.topics
        batch = Batch()
        for message in messages:
            try:
                if message.topic == topics.customer_erasures:
                    erasure = self.erasure_codec.decode(message.value)
                    batch.erasures.append(erasure)
                    for customer_id in erasure["customer_ids"]:  # their identities row is deleted: written anew if they return
                        self._identities_written.pop(customer_id, None)
                elif message.topic == topics.customer_profiles:
                    self._add_profile(batch, message)
                elif message.topic == topics.campaigns:
                    campaign = self.campaign_codec.decode(message.value)
                    batch.campaigns.add([campaign[column] for column in CAMPAIGN_COLUMNS], message)
                elif message.topic == topics.identity_merges:
                    merge = self.merge_codec.decode(message.value)
                    if merge["action"] == "merge":  # a split re-keys nothing already published
                        batch.merges.append((merge, message))
                elif message.topic == topics.dead_letters:
                    letter = self.dead_letter_codec.decode(message.value)
                    if letter["identifier_tokens"]:  # sealed at the connector for the people it names
                        letter["raw"] = self.vault.open(letter["raw"]) or b""  # b"": they were forgotten
                    batch.dead.add([letter[column] for column in DEAD_LETTER_COLUMNS], message)
                else:
                    e = self.timeline_codec.decode(message.value)
                    payload_json, text, attributes = split_personal(e["payload_json"])
                    if e.get("sealed_details"):
                        opened = self.vault.open(e["sealed_details"])
                        details = orjson.loads(opened) if opened is not None else {}  # None: the person was forgotten
                        text, attributes = details.get("text"), details.get("attributes")
                    batch.timeline.add([e["event_id"], e["event_time"], e["channel"], e["event_type"], e["customer_id"],
                                        e["source_id"], e["amount_minor"], e["currency"], payload_json,
                                        message.topic, message.partition, message.offset], message)
                    if text is not None or attributes is not None:
                        batch.details.add([e["event_id"], e["customer_id"], e["event_time"], e["channel"], text or "",
                                           orjson.dumps(attributes or {}).decode()], message)
            except Exception as error:  # undecodable: keep it, as a dead letter, with the reason
                batch.dead.add(dead_letter_row(f"sink:{message.topic}", message, error), message)
        return batch

    def _identity_map_rows(self, merges: list[tuple[dict, object]]) -> TableRows:
        """absorbed -> surviving for each merge, in order, and every id that meant the absorbed one now means
        the survivor too (transitive), so a query needs one lookup. One read for the whole batch (a read per
        merge was a sixth of the sink's time in bench_end_to_end); a merge re-keys what an earlier merge of the
        batch re-keyed. Replays write the same rows again."""
        absorbed = sorted({merge["absorbed_id"] for merge, _ in merges})
        stored = self.client.query("SELECT customer_id, current_id FROM identity_map FINAL "
                                   "WHERE current_id IN {ids:Array(String)}", parameters={"ids": absorbed}).result_rows
        meaning: dict[str, set[str]] = {}   # an id -> the ids that mean it now (those a merge of it moves)
        for customer_id, current_id in stored:
            meaning.setdefault(current_id, set()).add(customer_id)
        rows = TableRows("identity_map", IDENTITY_MAP_COLUMNS)
        for merge, origin in merges:
            gone, kept = merge["absorbed_id"], merge["surviving_id"]
            version = int(merge["at"].timestamp() * 1000)
            identifier = hashlib.sha256(merge["identifier"].encode()).hexdigest()  # every department reads identity_map
            moving = [gone] + sorted(meaning.pop(gone, set()) - {gone})
            meaning.setdefault(kept, set()).update(moving)
            for customer_id in moving:
                rows.add([customer_id, kept, version, merge["event_id"], identifier], origin)
        return rows

    def _erase(self, erasure: dict) -> None:
        """Remove a customer's personal data: their identifiers, and the free text and channel details
        (addresses, handles' platforms...) of their events; amounts, lines and dates stay for the totals."""
        ids = erasure["customer_ids"]
        if erasure.get("identifier_tokens"):
            self.client.command("DELETE FROM dead_letters WHERE hasAny(identifier_tokens, {tokens:Array(String)})",
                                parameters={"tokens": erasure["identifier_tokens"]})
        if not ids:
            return
        self.client.command("DELETE FROM customer_identities WHERE customer_id IN {ids:Array(String)}", parameters={"ids": ids})
        self._insert_rows("customer_identities", [[i, [], 1, erasure["at"]] for i in ids], IDENTITY_COLUMNS)
        self.client.command("DELETE FROM event_details WHERE customer_id IN {ids:Array(String)}", parameters={"ids": ids})
        self.client.command("DELETE FROM support_contacts WHERE customer_id IN {ids:Array(String)}", parameters={"ids": ids})
        # Events stored before event_details existed (migration 0010) may still carry text in their payload.
        keys = "[" + ", ".join(f"'{key}'" for key in PERSONAL_PAYLOAD_KEYS) + "]"
        rows = self.client.query("SELECT DISTINCT event_id, payload_json FROM timeline_events WHERE customer_id IN {ids:Array(String)} "
                                 f"AND hasAny(JSONExtractKeys(payload_json), {keys})", parameters={"ids": ids}).result_rows
        if not rows:
            return
        event_ids = [row[0] for row in rows]
        anonymised = [split_personal(row[1])[0] for row in rows]
        self.client.command(
            "ALTER TABLE timeline_events UPDATE payload_json = transform(event_id, {ids:Array(String)}, "
            "{payloads:Array(String)}, payload_json) WHERE event_id IN {ids:Array(String)}",
            parameters={"ids": event_ids, "payloads": anonymised}, settings={"mutations_sync": 2})

    def _insert_rows(self, table: str, rows: list, columns: list[str]) -> None:
        types = self._column_types.get(table)
        if types is None:
            described = self.client.query(f"DESCRIBE TABLE {table}").named_results()
            types = self._column_types[table] = {column["name"]: get_from_name(column["type"]) for column in described}
        self.client.insert(table, rows, column_names=columns, column_types=[types[column] for column in columns])

    def _insert_isolating(self, rows: TableRows, start: int = 0, end: int | None = None) -> list[tuple[object, Exception]]:
        """Insert rows[start:end]; when ClickHouse refuses rows (not an outage), bisect until each refused row
        stands alone, store the others, and return the refused ones with ClickHouse's reason. An outage
        raises, and the caller retries the whole batch (what was stored meanwhile is stored once: the
        tables are keyed on the records' identity)."""
        end = len(rows.rows) if end is None else end
        if start >= end:
            return []
        try:
            self._insert_rows(rows.table, rows.rows[start:end], rows.columns)
            return []
        except Exception as error:
            if not is_row_rejection(error):
                raise
            if end - start == 1:
                return [(rows.origins[start], error)]
        middle = (start + end) // 2
        return self._insert_isolating(rows, start, middle) + self._insert_isolating(rows, middle, end)

    def _insert(self, batch: Batch) -> tuple[int, Counter, int]:
        """Write a batch; returns the identity_map rows written, the rows refused (dead-lettered) per table,
        and how many Kafka records had a row refused (a profile record makes two rows, so rows and
        records differ; the records are what reconcile with what was read)."""
        dead_rows: list[list] = []
        refused_by_table: Counter = Counter()
        refused_records: set[int] = set()

        def refuse(table: str, origin, error: Exception) -> None:
            refused_by_table[table] += 1
            refused_records.add(id(origin))
            log.warning("ClickHouse refused a row of %s (%s partition %s offset %s): %s",
                        table, origin.topic, origin.partition, origin.offset, error)
            dead_rows.append(dead_letter_row(f"sink:clickhouse:{table}", origin, f"ClickHouse refused the row: {error}"))

        for rows in (batch.profiles, batch.identities, batch.campaigns, batch.timeline):
            for origin, error in self._insert_isolating(rows):
                refuse(rows.table, origin, error)
        for origin, error in self._insert_isolating(batch.details.without(refused_records)):  # no details for an unstored event
            refuse(batch.details.table, origin, error)
        for erasure in batch.erasures:  # after this batch's inserts, so nothing of theirs comes back with it
            self._erase(erasure)
        mapped = 0
        if batch.merges:
            identity_rows = self._identity_map_rows(batch.merges)
            failed = self._insert_isolating(identity_rows)
            first_error = {}   # every row of a merge comes from the same record: one dead letter for it
            for origin, error in failed:
                first_error.setdefault(id(origin), (origin, error))
            for origin, error in first_error.values():
                refuse(identity_rows.table, origin, error)
            mapped = len(identity_rows.rows) - len(failed)
        dead = TableRows("dead_letters", DEAD_LETTER_COLUMNS, batch.dead.rows + dead_rows,
                         batch.dead.origins + [None] * len(dead_rows))
        unstored = self._insert_isolating(dead)
        if unstored:  # nowhere left to keep them: better to stop and say so than to lose them
            raise RuntimeError(f"ClickHouse refused {len(unstored)} dead-letter rows: {unstored[0][1]}")
        return mapped, refused_by_table, len(refused_records)

    async def _insert_with_retry(self, batch: Batch, stop: asyncio.Event) -> tuple[int, Counter, int] | None:
        delay = self.settings.sink.retry_initial_seconds
        while True:
            try:
                return await asyncio.to_thread(self._insert, batch)
            except Exception as error:
                self.stats.insert_failures += 1
                self.stats.last_error = str(error)
                log.warning("ClickHouse insert failed (%s); retrying in %.1fs", error, delay)
                if stop.is_set():
                    return None  # not committed: the batch is replayed on the next start
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, self.settings.sink.retry_max_seconds)

    def _follow_backlog(self, messages: list) -> None:
        """Decide whether the next batch gathers with the backlog window, from how long this batch's oldest
        timeline record waited upstream: its timestamp is when the connector accepted the event
        (streams/resolver.py: Send)."""
        timeline = self.settings.topics.customer_timeline
        oldest = min((m.timestamp for m in messages if m.topic == timeline and m.timestamp is not None), default=None)
        if oldest is None:
            return
        waited = time.time() - oldest / 1000
        backlog = waited > self.settings.sink.backlog_seconds
        if backlog != self._backlog:
            if backlog:
                log.info("sink: events reach it %.1f s after their connector accepted them: batches of up to %.1f s "
                         "until the backlog is cleared", waited, self.settings.sink.backlog_batch_max_seconds)
            else:
                log.info("sink: backlog cleared, batches of up to %.1f s again", self.settings.sink.batch_max_seconds)
            self._backlog = backlog

    async def _gather(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> list:
        """Records until batch_max_rows or the window (batch_max_seconds, or backlog_batch_max_seconds under a
        backlog), whichever comes first."""
        max_rows = self.settings.sink.batch_max_rows
        messages: list = []
        window = self.settings.sink.backlog_batch_max_seconds if self._backlog else self.settings.sink.batch_max_seconds
        deadline = time.monotonic() + window
        while len(messages) < max_rows and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            fetched = await consumer.getmany(timeout_ms=int(remaining * 1000) + 1, max_records=max_rows - len(messages))
            for partition_messages in fetched.values():
                messages.extend(partition_messages)
        if messages and self._backlog:
            self.stats.backlog_batches += 1
        return messages

    async def _complete(self, consumer: AIOKafkaConsumer, insert: asyncio.Task, messages: list, batch: Batch) -> bool:
        """Wait for a batch's insert, then commit its records' offsets; False when stopped before it was stored."""
        written = await insert
        if written is None:
            return False
        offsets = {}
        for message in messages:
            offsets[TopicPartition(message.topic, message.partition)] = message.offset + 1
        await consumer.commit(offsets)
        mapped, refused, refused_records = written
        self.stats.batches += 1
        self.stats.records_read += len(messages)
        self.stats.timeline_rows += len(batch.timeline.rows) - refused["timeline_events"]
        self.stats.dead_letter_rows += len(batch.dead.rows) + sum(refused.values())
        self.stats.identity_map_rows += mapped
        self.stats.records_refused += refused_records
        return True

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> SinkStats:
        """Batches are gathered and decoded while the previous one is inserted (ClickHouse works outside the
        GIL), and inserted one at a time, in order; each batch's offsets are committed once it is stored."""
        topics = [self.settings.topics.customer_timeline, self.settings.topics.dead_letters,
                  self.settings.topics.identity_merges, self.settings.topics.campaigns,
                  self.settings.topics.customer_profiles, self.settings.topics.customer_erasures]
        consumer = AIOKafkaConsumer(*topics, **consumer_config(self.settings, self.bootstrap, self.settings.sink.group_id))
        await consumer.start()
        if ready is not None:
            ready.set()
        inserting: tuple[asyncio.Task, list, Batch] | None = None
        try:
            while not stop.is_set():
                messages = await self._gather(consumer, stop)
                if inserting is not None and (messages or inserting[0].done() or stop.is_set()):
                    if not await self._complete(consumer, *inserting):
                        inserting = None
                        break
                    inserting = None
                if messages:
                    self._follow_backlog(messages)
                    batch = self._batch(messages)
                    inserting = (asyncio.ensure_future(self._insert_with_retry(batch, stop)), messages, batch)
            if inserting is not None:  # stopping: the batch gathered last is stored and committed, or replayed
                await self._complete(consumer, *inserting)
                inserting = None
        finally:
            if inserting is not None:  # cancelled: not committed, so replayed on the next start
                inserting[0].cancel()
            await consumer.stop()
        return self.stats
