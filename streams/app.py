"""Faust app: resolve the customer behind every channel event and publish the unified topics.

One agent reads every channel topic (and operator commands) and, per event: resolves its customer
in the identity graph (streams/identity.py, kept in streams/state_store.py), folds it into
the customer's profile (streams/profiles.py), and publishes
- customer-timeline: the event with its resolved customer id, keyed by customer id;
- identity-merges: each merge or split, keyed by the surviving id;
- identity-warnings: dropped identifiers, demotions to shared, refused merges, with reasons;
- customer-profiles (compacted): each changed customer's profile once per batch, and a tombstone
  for an id merged away.

At-least-once: Faust commits a source offset only after the batch's state change is stored and every
record it produced is acknowledged, so a crashed worker re-processes from the last commit. A redelivered
event changes no state (the events view knows it) and its timeline record is published again as it
was, with the same event id and customer id, so consumers deduplicate it as one record. exactly_once is not an option on tansu.

Consistency: the identity graph is one state with one writer, so resolution runs on one worker; its
changelog has one partition, one delta record per batch, replayed in order.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import faust
from aiokafka import AIOKafkaProducer

from infra.kafka import broker_id, consumer_config, ensure_topics, fetched_end_offsets, matching_topics, producer_config
from infra.settings import Settings
from infra.supervision import RESTART_REQUESTED
from schemas.models import dead_letter
from schemas.serde import codec
from streams import profiles as profile_state
from streams.state_store import DeltaAssembler, StateStore, delta_records
from streams.identity import IdentityGraph, IdentityRules, Resolution, event_identifiers

log = logging.getLogger(__name__)

NEW_CHANNEL_POLL_SECONDS = 3.0
# Set by the app when it stopped to pick up a new channel topic; read by run_worker for its exit status.
restart = {"requested": False}
BATCH_MAX_EVENTS = 1000
BATCH_MAX_SECONDS = 0.05
TIMELINE_KINDS_EXCLUDED = ("order", "order_mention")  # derived for matching, not identifiers of the person


def identity_rules(settings: Settings) -> IdentityRules:
    s = settings.identity
    return IdentityRules(default_region=s.default_region, blocked_values=tuple(s.blocked_values),
                         exclusive_kinds=tuple(s.exclusive_kinds), shared_after=s.shared_after,
                         shared_window_days=s.shared_window_days,
                         max_identifiers=s.max_identifiers)


def state_changelog(settings: Settings) -> str:
    return f"{settings.streams.app_id}-resolution-state-changelog"


def create_app(settings: Settings, bootstrap: str, store: StateStore) -> faust.App:
    app = faust.App(
        settings.streams.app_id,
        broker=[f"kafka://{server}" for server in bootstrap.split(",")],
        store="memory://",  # no Faust tables: the resolution state is streams/state_store.py
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
    # settings change. Faust cannot subscribe by pattern (its aiokafka driver: "XXX pattern does not
    # work"), so a new channel's topic is read after a restart that watch_for_new_channels asks for.
    names = matching_topics(bootstrap, topics.channel_pattern)
    if not names:
        log.warning("no topic matches topics.channel_pattern %r yet: reading operator commands only; the worker "
                    "restarts itself when a connector creates its channel topic", topics.channel_pattern)
    log.info("reading channel topics %s and commands from %s", names, topics.identity_commands)
    source = app.topic(*names, topics.identity_commands, key_serializer="raw", value_serializer="raw")

    rules = identity_rules(settings)
    views = store.views
    profiles = views["profiles"]
    graph = IdentityGraph(rules, views["owners"], views["clusters"], views["aliases"], views["sightings"],
                          views["events"], views["meta"])
    changelog = state_changelog(settings)
    this_broker = broker_id(bootstrap)
    codecs = {name: codec(name, registry, topic) for name, topic in (
        ("channel_event", None), ("timeline_event", topics.customer_timeline), ("identity_merge", topics.identity_merges),
        ("identity_warning", topics.identity_warnings), ("customer_profile", topics.customer_profiles),
        ("customer_erasure", topics.customer_erasures),
        ("dead_letter", topics.dead_letters))}
    state = {"producer": None, "best_threshold": None, "started": uuid.uuid4().hex[:12], "batches": 0}

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
            kafka = await producer()
            # State first (changelog acked, then RocksDB), outputs second, offsets last: streams/state_store.py.
            delta = store.take_delta()
            if delta:
                state["batches"] += 1
                parts = delta_records(delta, f"{state['started']}-{state['batches']}")
                acks = await asyncio.gather(*[await kafka.send(changelog, part, partition=0) for part in parts])
                store.apply(delta, acks[-1].offset, this_broker)
            futures = [await kafka.send(topic, value, key=key) for topic, key, value in sends]
            await asyncio.gather(*futures)
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
        revenues = sorted((profile_state.revenue_12_months(p) for p in profiles.values() if p), reverse=True)
        revenues = [r for r in revenues if r > 0]
        if revenues:
            index = max(0, int(len(revenues) * settings.identity.best_customer_share) - 1)
            state["best_threshold"] = revenues[index]

    return app


async def recover_state(settings: Settings, bootstrap: str, store: StateStore) -> dict:
    """Bring the local state up to the changelog's end: only what was written after the offset RocksDB
    holds (everything, on a fresh machine). Returns what it did, for the log and the benchmark."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    started = time.monotonic()
    changelog = state_changelog(settings)
    ensure_topics(bootstrap, [changelog], 1, settings.topics.replication_factor)
    this_broker = broker_id(bootstrap)
    if store.changelog_broker and store.changelog_broker != this_broker:
        # The broker lost its data (or is another one): keep the local state, so known people keep their ids,
        # and start a new changelog on this broker with a full copy of it.
        log.error("the resolution state's changelog was on broker %s, this broker is %s: keeping the local state "
                  "and writing it to the new changelog", store.changelog_broker, this_broker)
        full = {name: {key: view[key] for key in view} for name, view in store.views.items()}
        producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
        await producer.start()
        try:
            parts = delta_records(full, f"snapshot-{uuid.uuid4().hex[:12]}")
            acks = await asyncio.gather(*[await producer.send(changelog, part, partition=0) for part in parts])
        finally:
            await producer.stop()
        store.apply({}, acks[-1].offset, this_broker)
        return {"replayed_records": 0, "seconds": time.monotonic() - started, "snapshot_records": len(parts)}
    partition = TopicPartition(changelog, 0)
    consumer = AIOKafkaConsumer(**consumer_config(settings, bootstrap, group_id=None))
    await consumer.start()
    replayed = applied = 0
    try:
        reported = await consumer.end_offsets([partition])
        end = (await fetched_end_offsets(bootstrap, reported))[partition]
        start = store.changelog_offset + 1
        consumer.assign([partition])
        consumer.seek(partition, start)
        assembler = DeltaAssembler()
        position = start
        while position < end:
            batch = await consumer.getmany(partition, timeout_ms=2000, max_records=2000)
            for message in batch.get(partition, []):
                position = message.offset + 1
                replayed += 1
                delta = assembler.add(message.value)
                if delta is not None:
                    store.apply(delta, message.offset, this_broker)
                    applied += 1
            if not batch and position < end:
                log.info("recovering the resolution state: at changelog offset %d of %d", position, end)
    finally:
        await consumer.stop()
    report = {"replayed_records": replayed, "applied_batches": applied, "from_offset": store.changelog_offset,
              "seconds": round(time.monotonic() - started, 3)}
    log.info("resolution state recovered: %s", report)
    return report


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "info") -> None:
    """Run one Faust worker in the foreground until SIGTERM/SIGINT; exits with RESTART_REQUESTED when it
    stopped to read a new channel topic (the hub restarts it; run alone, start it again)."""
    store = StateStore(Path(settings.data_dir) / "state")
    asyncio.run(recover_state(settings, bootstrap, store))
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run closed its loop; Faust needs one
    app = create_app(settings, bootstrap, store)
    worker = faust.Worker(app, loglevel=loglevel, override_logging=False)
    try:
        worker.execute_from_commandline()
    finally:
        if restart["requested"]:
            logging.shutdown()
            os._exit(RESTART_REQUESTED)
