"""Faust app: resolve the customer behind every channel event and publish the unified topics.

One agent reads every channel topic (and operator commands) and, per event: resolves its customer
in the identity graph (streams/identity.py, kept in changelog-backed Faust tables), folds it into
the customer's profile (streams/profiles.py), and publishes
- customer-timeline: the event with its resolved customer id, keyed by customer id;
- identity-merges: each merge or split, keyed by the surviving id;
- identity-warnings: dropped identifiers, demotions to shared, refused merges, with reasons;
- customer-profiles (compacted): each changed customer's profile once per batch, and a tombstone
  for an id merged away.

At-least-once: Faust commits a source offset only after the batch is processed and every record it
produced is acknowledged, so a crashed worker re-processes from the last commit. A redelivered
event changes no state (the events table knows it) and its timeline record is published again as it
was, with the same event id and customer id, so consumers deduplicate it as one record. exactly_once is not an option on tansu.

Consistency: the identity graph is one state, so resolution runs on one worker; the tables use the
key partitioner, so each key's history is in one changelog partition and replays in order.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from datetime import datetime, timezone

import faust
from aiokafka import AIOKafkaProducer

from infra.kafka import fetched_end_offsets, matching_topics, producer_config
from infra.settings import Settings
from infra.supervision import RESTART_REQUESTED
from schemas.models import dead_letter
from schemas.serde import codec
from streams import profiles as profile_state
from streams.batch_state import BatchState
from streams.identity import IdentityGraph, IdentityRules, Resolution, event_identifiers

log = logging.getLogger(__name__)

NEW_CHANNEL_POLL_SECONDS = 3.0
# Set by the app when it stopped to pick up a new channel topic; read by run_worker for its exit status.
restart = {"requested": False}
BATCH_MAX_EVENTS = 1000
BATCH_MAX_SECONDS = 0.05
TIMELINE_KINDS_EXCLUDED = ("order", "order_mention")  # derived for matching, not identifiers of the person


def trust_fetch_high_watermarks() -> None:
    """Faust recovers tables by reading changelogs up to their end offsets, which tansu can report
    too low (infra/quirks/end_offsets.py): recovery would stop early and lose state. Take the end
    offsets from fetch responses instead (infra.kafka.fetched_end_offsets)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_omnihub_fetched_ends", False):
        return
    original = AIOKafkaConsumerThread._highwaters

    async def _highwaters(self, partitions):
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        bootstrap = ",".join(f"{url.host}:{url.port}" for url in self.app.conf.broker)
        return await fetched_end_offsets(bootstrap, dict(reported))

    AIOKafkaConsumerThread._highwaters = _highwaters
    AIOKafkaConsumerThread._omnihub_fetched_ends = True


def identity_rules(settings: Settings) -> IdentityRules:
    s = settings.identity
    return IdentityRules(default_region=s.default_region, blocked_values=tuple(s.blocked_values),
                         exclusive_kinds=tuple(s.exclusive_kinds), shared_after=s.shared_after,
                         shared_window_days=s.shared_window_days,
                         max_identifiers=s.max_identifiers)


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    trust_fetch_high_watermarks()
    app = faust.App(
        settings.streams.app_id,
        broker=[f"kafka://{server}" for server in bootstrap.split(",")],
        store="memory://",
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_ms / 1000,
        broker_request_timeout=settings.kafka.consumer_request_timeout_ms / 1000,
        producer_acks=-1,
        producer_linger_ms=settings.kafka.producer_linger_ms,
        producer_max_batch_size=settings.kafka.producer_max_batch_bytes,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.data_dir / "faust"),
        web_enabled=False,
    )
    registry = settings.schemas.registry_url
    topics = settings.topics
    # Channel topics are found by name pattern, so a channel added with one connector config needs no
    # settings change. Found at start only: Faust cannot subscribe by pattern (its aiokafka driver:
    # "XXX pattern does not work"), so a new channel's topic is read from the worker's next start.
    names = matching_topics(bootstrap, topics.channel_pattern)
    if not names:
        raise RuntimeError(f"no topic matches topics.channel_pattern {topics.channel_pattern!r}: "
                           "run a connector (it creates its topic) or `omnihub topics create`")
    log.info("reading channel topics %s and commands from %s", names, topics.identity_commands)
    source = app.topic(*names, topics.identity_commands, key_serializer="raw", value_serializer="raw")

    def table(name: str) -> faust.Table:
        return app.Table(name, default=None, partitions=topics.partitions, use_partitioner=True)

    rules = identity_rules(settings)
    profile_table = table("customer-profile-state")
    # Write-back views, flushed once per batch: one changelog record per key touched, not per change.
    views = [BatchState(table(name)) for name in ("identity-owners", "identity-clusters", "identity-aliases",
                                                  "identity-sightings", "identity-events", "identity-meta")]
    profiles = BatchState(profile_table)
    views.append(profiles)
    graph = IdentityGraph(rules, *views[:6])
    codecs = {name: codec(name, registry, topic) for name, topic in (
        ("channel_event", None), ("timeline_event", topics.customer_timeline), ("identity_merge", topics.identity_merges),
        ("identity_warning", topics.identity_warnings), ("customer_profile", topics.customer_profiles),
        ("customer_erasure", topics.customer_erasures),
        ("dead_letter", topics.dead_letters))}
    state = {"producer": None, "best_threshold": None}

    async def producer() -> AIOKafkaProducer:
        # Our own producer, not Faust's topic.send: a send per event through Faust costs ~0.8 ms here.
        if state["producer"] is None:
            state["producer"] = AIOKafkaProducer(**producer_config(settings, bootstrap))
            await state["producer"].start()
        return state["producer"]

    def now() -> datetime:
        return datetime.now(timezone.utc)

    def publish_changes(result: Resolution, sends: list, changed: set, absorbed: set) -> None:
        for merge in result.merges:
            if merge.action == "merge":
                kept = profiles.get(merge.surviving_id) or profile_state.empty(merge.surviving_id)
                gone = profiles.get(merge.absorbed_id) or profile_state.empty(merge.absorbed_id)
                profiles[merge.surviving_id] = profile_state.merge(kept, gone)
                if merge.absorbed_id in profiles:
                    del profiles[merge.absorbed_id]
            sends.append((topics.identity_merges, merge.surviving_id.encode(), codecs["identity_merge"].encode(
                {**merge.__dict__, "at": now()})))
        for identifier, reason in result.warnings:
            sends.append((topics.identity_warnings, identifier.encode() or None, codecs["identity_warning"].encode(
                {"identifier": identifier, "customer_id": result.customer_id or None, "event_id": None,
                 "reason": reason, "at": now()})))
        changed |= result.changed
        absorbed |= result.absorbed

    def handle_event(event: dict, sends: list, changed: set, absorbed: set) -> None:
        result = graph.resolve(event["event_id"], event_identifiers(event), profile_state.millis(event["occurred_at"]))
        customer_id = result.customer_id
        if not result.duplicate:  # a redelivered event changes no state
            publish_changes(result, sends, changed, absorbed)
            profiles[customer_id] = profile_state.fold(profiles.get(customer_id) or profile_state.empty(customer_id), event)
            changed.add(customer_id)
        timeline = {
            "event_id": event["event_id"], "event_time": event["occurred_at"], "channel": event["channel"],
            "event_type": event["event_type"], "customer_id": customer_id, "source_id": event["source_id"],
            "identifiers": [{"kind": i.kind, "value": i.value} for i in result.identifiers
                            if i.kind not in TIMELINE_KINDS_EXCLUDED],
            "amount_minor": event["total_minor"], "currency": event["currency"],
            "payload_json": json.dumps({name: event[name] for name in (
                "lines", "shipping_cost_minor", "discount_minor", "campaign", "related_order_id", "status", "text",
                "attributes") if event.get(name) not in (None, [], {})}, separators=(",", ":"), ensure_ascii=False),
        }
        sends.append((topics.customer_timeline, customer_id.encode(), codecs["timeline_event"].encode(timeline)))

    def handle_command(command: dict, sends: list, changed: set, absorbed: set) -> None:
        if command.get("command") == "forget":
            customer_id, removed = graph.forget(command["customer_id"])
            profile = profiles.get(customer_id) or profile_state.empty(customer_id)
            if customer_id in profiles:
                del profiles[customer_id]
            ids = sorted({customer_id, command["customer_id"], *profile["merged_ids"]})
            sends.append((topics.customer_erasures, customer_id.encode(), codecs["customer_erasure"].encode(
                {"customer_id": customer_id, "customer_ids": ids, "identifiers_removed": len(removed),
                 "reason": command.get("reason") or "erasure request", "at": now()})))
            absorbed.add(customer_id)  # a tombstone on customer-profiles
            changed.discard(customer_id)
            return
        if command.get("command") != "split":
            raise ValueError(f"unknown command {command.get('command')!r} (known: split, forget)")
        result = graph.split(command["customer_id"], list(command["identifiers"]), command.get("reason") or "operator")
        for merge in result.merges:
            profiles[merge.absorbed_id] = profile_state.empty(merge.absorbed_id)
        publish_changes(result, sends, changed, absorbed)

    def profile_record(customer_id: str) -> bytes | None:
        cluster = graph.clusters.get(customer_id)
        profile = profiles.get(customer_id)
        if profile is None:
            return None
        return codecs["customer_profile"].encode(profile_state.to_avro(
            profile, cluster["identifiers"] if cluster else [], cluster["version"] if cluster else 1,
            settings.identity.repurchase_days, state["best_threshold"]))

    @app.agent(source, name="resolve-customers")
    async def resolve_customers(stream):
        # Batches: Faust's per-event overhead dominates otherwise; events are acked after their batch.
        async for events in stream.take_events(BATCH_MAX_EVENTS, within=BATCH_MAX_SECONDS):
            sends: list[tuple[str, bytes | None, bytes]] = []
            changed: set[str] = set()
            absorbed: set[str] = set()
            for event in events:
                message = event.message
                try:
                    if message.topic == topics.identity_commands:
                        handle_command(json.loads(event.value), sends, changed, absorbed)
                    else:
                        handle_event(codecs["channel_event"].decode(event.value), sends, changed, absorbed)
                except Exception as error:  # a bad record must not stop the agent: dead-letter it
                    log.warning("dead-lettering %s partition %d offset %d: %s", message.topic, message.partition,
                                message.offset, error)
                    sends.append((topics.dead_letters, None, codecs["dead_letter"].encode(dead_letter(
                        "streams:resolve-customers", message.topic,
                        f"partition {message.partition} offset {message.offset}", error, event.value))))
            for customer_id in sorted(changed - absorbed):
                record = profile_record(customer_id)
                if record is not None:
                    sends.append((topics.customer_profiles, customer_id.encode(), record))
            for customer_id in sorted(absorbed):
                sends.append((topics.customer_profiles, customer_id.encode(), None))  # tombstone: merged away or forgotten
            for view in views:
                view.flush()
            kafka = await producer()
            futures = [await kafka.send(topic, value, key=key) for topic, key, value in sends]
            await asyncio.gather(*futures)
            # The tables' changelog writes too: Faust buffers them, and a commit that overtook them would
            # leave a restarted worker with state older than its offsets.
            await app.producer.flush()
            # Everything this batch produced is acknowledged: Faust may now ack its events.

    @app.timer(interval=NEW_CHANNEL_POLL_SECONDS)
    async def watch_for_new_channels():
        """Faust cannot subscribe by pattern, so a channel topic created after the start (a new connector
        run while the hub is up) is read by restarting: the worker stops cleanly and exits with
        RESTART_REQUESTED, and the hub's supervisor starts it again at once, now reading that topic."""
        found = set(await asyncio.to_thread(matching_topics, bootstrap, topics.channel_pattern))
        new = sorted(found - set(names))
        if new and not restart["requested"]:
            log.info("new channel topic(s) %s: restarting the worker to read them", ", ".join(new))
            restart["requested"] = True
            os.kill(os.getpid(), signal.SIGTERM)

    @app.timer(interval=30.0)
    async def best_customer_threshold():
        """The 12-month revenue that puts a customer in the best-customer segment, from all profiles."""
        revenues = sorted((profile_state.revenue_12_months(p) for p in profile_table.values() if p), reverse=True)
        revenues = [r for r in revenues if r > 0]
        if revenues:
            index = max(0, int(len(revenues) * settings.identity.best_customer_share) - 1)
            state["best_threshold"] = revenues[index]

    return app


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "info") -> None:
    """Run one Faust worker in the foreground until SIGTERM/SIGINT; exits with RESTART_REQUESTED when it
    stopped to read a new channel topic (the hub restarts it; run alone, start it again)."""
    app = create_app(settings, bootstrap)
    worker = faust.Worker(app, loglevel=loglevel, override_logging=False)
    try:
        worker.execute_from_commandline()
    finally:
        if restart["requested"]:
            logging.shutdown()
            os._exit(RESTART_REQUESTED)
