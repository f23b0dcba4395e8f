"""The ClickHouse sink: unified topics to tables, in batches, offsets committed after the insert.

At-least-once: a batch is committed to Kafka only after ClickHouse accepted it, so a crash replays
it; the tables are ReplacingMergeTree keyed on the event's identity, so the replay is stored once.
While ClickHouse refuses inserts the sink retries the same batch with exponential backoff.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from aiokafka import AIOKafkaConsumer

from infra.kafka import consumer_config
from infra.settings import Settings
from schemas.models import dead_letter
from schemas.serde import codec

log = logging.getLogger(__name__)

TIMELINE_COLUMNS = ["event_id", "event_time", "channel", "event_type", "customer_id", "source_id", "amount_minor",
                    "currency", "payload_json", "kafka_topic", "kafka_partition", "kafka_offset"]
DEAD_LETTER_COLUMNS = ["component", "source", "position", "error", "raw", "rejected_at"]
IDENTITY_MAP_COLUMNS = ["customer_id", "current_id", "version", "merge_event", "identifier"]
PROFILE_COLUMNS = ["customer_id", "version", "merged_ids", "first_seen", "last_seen", "events", "online_orders",
                   "online_revenue_minor", "store_orders", "store_revenue_minor", "average_basket_minor", "repurchased",
                   "open_tickets", "last_contact_channel", "social_mentions", "sentiment", "best_customer"]
ERASED_PAYLOAD_KEYS = ("text", "attributes")  # free text and channel details may name or locate the person
CAMPAIGN_COLUMNS = ["campaign_id", "name", "starts_at", "ends_at", "audience_segment", "channels", "discount_code",
                    "media_cost_minor", "currency", "expected_extra_visitors"]


@dataclass
class SinkStats:
    batches: int = 0
    timeline_rows: int = 0
    dead_letter_rows: int = 0
    identity_map_rows: int = 0
    insert_failures: int = 0
    last_error: str | None = None
    started: float = field(default_factory=time.monotonic)


class ClickHouseSink:
    def __init__(self, settings: Settings, bootstrap: str, client):
        self.settings = settings
        self.bootstrap = bootstrap
        self.client = client
        self.stats = SinkStats()
        registry = settings.schemas.registry_url
        self.timeline_codec = codec("timeline_event", registry, settings.topics.customer_timeline)
        self.dead_letter_codec = codec("dead_letter", registry, settings.topics.dead_letters)
        self.merge_codec = codec("identity_merge", registry, settings.topics.identity_merges)
        self.campaign_codec = codec("campaign", registry, settings.topics.campaigns)
        self.profile_codec = codec("customer_profile", registry, settings.topics.customer_profiles)
        self.erasure_codec = codec("customer_erasure", registry, settings.topics.customer_erasures)

    def _profile_rows(self, message) -> tuple[list, list]:
        """(customer_profiles row, customer_identities row): personal data goes to the second only."""
        updated = datetime.fromtimestamp(message.timestamp / 1000, tz=timezone.utc)
        customer_id = message.key.decode()
        if message.value is None:  # tombstone: merged away or forgotten
            empty = [customer_id, 0, [], None, None, 0, 0, 0, 0, 0, 0, False, 0, None, 0, None, False]
            return empty + [1, updated], [customer_id, [], 1, updated]
        profile = self.profile_codec.decode(message.value)
        return ([profile[column] for column in PROFILE_COLUMNS] + [0, updated],
                [customer_id, profile["identifiers"], 0, updated])

    def _rows(self, messages) -> tuple[list[list], list[list], list[dict], list[list], list[list], list[list], list[dict]]:
        timeline, dead, merges, campaigns, profiles, identities, erasures = [], [], [], [], [], [], []
        for message in messages:
            try:
                if message.topic == self.settings.topics.customer_erasures:
                    erasures.append(self.erasure_codec.decode(message.value))
                elif message.topic == self.settings.topics.customer_profiles:
                    profile, identity = self._profile_rows(message)
                    profiles.append(profile)
                    identities.append(identity)
                elif message.topic == self.settings.topics.campaigns:
                    campaign = self.campaign_codec.decode(message.value)
                    campaigns.append([campaign[column] for column in CAMPAIGN_COLUMNS])
                elif message.topic == self.settings.topics.identity_merges:
                    merge = self.merge_codec.decode(message.value)
                    if merge["action"] == "merge":  # a split re-keys nothing already published
                        merges.append(merge)
                elif message.topic == self.settings.topics.dead_letters:
                    letter = self.dead_letter_codec.decode(message.value)
                    dead.append([letter[column] for column in DEAD_LETTER_COLUMNS])
                else:
                    e = self.timeline_codec.decode(message.value)
                    timeline.append([e["event_id"], e["event_time"], e["channel"], e["event_type"], e["customer_id"],
                                     e["source_id"], e["amount_minor"], e["currency"], e["payload_json"],
                                     message.topic, message.partition, message.offset])
            except Exception as error:  # undecodable: keep it, as a dead letter, with the reason
                letter = dead_letter(f"sink:{message.topic}", message.topic,
                                     f"partition {message.partition} offset {message.offset}", error, message.value)
                dead.append([letter[column] for column in DEAD_LETTER_COLUMNS])
        return timeline, dead, merges, campaigns, profiles, identities, erasures

    def _identity_map_rows(self, merges: list[dict]) -> list[list]:
        """absorbed -> surviving for each merge, and every id that meant the absorbed one now means the
        survivor too (transitive), so a query needs one lookup. Replays write the same rows again."""
        rows = []
        for merge in merges:
            version = int(merge["at"].timestamp() * 1000)
            earlier = self.client.query("SELECT customer_id FROM identity_map FINAL WHERE current_id = {id:String}",
                                        parameters={"id": merge["absorbed_id"]}).result_rows
            for customer_id in [merge["absorbed_id"]] + [row[0] for row in earlier]:
                rows.append([customer_id, merge["surviving_id"], version, merge["event_id"], merge["identifier"]])
        return rows

    def _erase(self, erasure: dict) -> None:
        """Remove a customer's personal data: their identifiers, and the free text and channel details
        (addresses, handles' platforms...) of their events; amounts, lines and dates stay for the totals."""
        ids = erasure["customer_ids"]
        self.client.command("DELETE FROM customer_identities WHERE customer_id IN {ids:Array(String)}", parameters={"ids": ids})
        self.client.insert("customer_identities", [[i, [], 1, erasure["at"]] for i in ids],
                           column_names=["customer_id", "identifiers", "deleted", "updated_at"])
        rows = self.client.query("SELECT DISTINCT event_id, payload_json FROM timeline_events WHERE customer_id IN {ids:Array(String)}",
                                 parameters={"ids": ids}).result_rows
        if not rows:
            return
        event_ids = [row[0] for row in rows]
        anonymised = [json.dumps({k: v for k, v in json.loads(row[1]).items() if k not in ERASED_PAYLOAD_KEYS},
                                 separators=(",", ":")) for row in rows]
        self.client.command(
            "ALTER TABLE timeline_events UPDATE payload_json = transform(event_id, {ids:Array(String)}, "
            "{payloads:Array(String)}, payload_json) WHERE event_id IN {ids:Array(String)}",
            parameters={"ids": event_ids, "payloads": anonymised}, settings={"mutations_sync": 2})

    def _insert(self, timeline: list[list], dead: list[list], merges: list[dict], campaigns: list[list],
                profiles: list[list], identities: list[list], erasures: list[dict]) -> int:
        if profiles:
            self.client.insert("customer_profiles", profiles, column_names=PROFILE_COLUMNS + ["deleted", "updated_at"])
            self.client.insert("customer_identities", identities,
                               column_names=["customer_id", "identifiers", "deleted", "updated_at"])
        if campaigns:
            self.client.insert("campaigns", campaigns, column_names=CAMPAIGN_COLUMNS)
        if timeline:
            self.client.insert("timeline_events", timeline, column_names=TIMELINE_COLUMNS)
        if dead:
            self.client.insert("dead_letters", dead, column_names=DEAD_LETTER_COLUMNS)
        for erasure in erasures:  # after this batch's inserts, so nothing of theirs comes back with it
            self._erase(erasure)
        mapped = 0
        for merge in merges:  # one at a time: a merge may re-key what the previous one wrote
            rows = self._identity_map_rows([merge])
            self.client.insert("identity_map", rows, column_names=IDENTITY_MAP_COLUMNS)
            mapped += len(rows)
        return mapped

    async def _insert_with_retry(self, rows: tuple, stop: asyncio.Event) -> int | None:
        delay = self.settings.sink.retry_initial_seconds
        while True:
            try:
                return await asyncio.to_thread(self._insert, *rows)
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

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> SinkStats:
        topics = [self.settings.topics.customer_timeline, self.settings.topics.dead_letters,
                  self.settings.topics.identity_merges, self.settings.topics.campaigns,
                  self.settings.topics.customer_profiles, self.settings.topics.customer_erasures]
        consumer = AIOKafkaConsumer(*topics, **consumer_config(self.settings, self.bootstrap, self.settings.sink.group_id))
        await consumer.start()
        if ready is not None:
            ready.set()
        max_rows = self.settings.sink.batch_max_rows
        max_wait = self.settings.sink.batch_max_seconds
        try:
            while not stop.is_set():
                messages = []
                deadline = time.monotonic() + max_wait
                while len(messages) < max_rows and not stop.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    fetched = await consumer.getmany(timeout_ms=int(remaining * 1000) + 1, max_records=max_rows - len(messages))
                    for partition_messages in fetched.values():
                        messages.extend(partition_messages)
                if not messages:
                    continue
                rows = self._rows(messages)
                timeline, dead = rows[0], rows[1]
                mapped = await self._insert_with_retry(rows, stop)
                if mapped is None:
                    break
                await consumer.commit()
                self.stats.batches += 1
                self.stats.timeline_rows += len(timeline)
                self.stats.dead_letter_rows += len(dead)
                self.stats.identity_map_rows += mapped
        finally:
            await consumer.stop()
        return self.stats
