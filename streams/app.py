"""Faust app: resolve the customer behind every channel event and publish the unified topics.

The worker reads every channel topic and, per batch: resolves each event's customer in the identity
graph (streams/identity.py, state in streams/state_store.py), folds it into the customer's profile
(streams/profiles.py), and publishes
- customer-timeline: the event with its resolved customer id, keyed by customer id;
- identity-merges: each merge or split, keyed by the surviving id;
- identity-warnings: dropped identifiers, demotions to shared, refused merges, with reasons;
- customer-profiles (compacted): each changed customer's profile once per batch, and a tombstone
  for an id merged away.

Which part leaves Faust's per-event stream path, and why: channel events are read by a Faust task
(`resolve_channel_events`) driving an aiokafka consumer in batches of up to BATCH_MAX_EVENTS (read_batch: under
a load, gathered for up to LOAD_BATCH_SECONDS). It takes
every partition of the topics matching topics.channel_pattern itself (looked up again every
TOPIC_REFRESH_SECONDS, so a new channel is read without a restart) instead of joining a consumer group:
there is one resolution worker by design, and a group join costs 3 s of every start on tansu. Offsets are
still committed under resolution_group(), where `omnihub status` reads the lag. Faust's per-message
consumer path costs 150-250 us an event here (a no-op agent made 2.8k-7k events/s where aiokafka made
65k-385k/s on the same topic), more than resolving the event; read in batches, the same worker resolves 10,800-14,400
events/s (tests/benchmarks/eval_identity.py). Each batch is resolved in a thread (the loop meanwhile sends and
acknowledges the previous batches) while holding the state's lock. Operator commands (split, forget) stay a
Faust agent on identity-commands, the best-customer threshold a Faust timer; `omnihub worker` is a Faust
worker.

At-least-once: a batch's input offsets are committed only after its state change is acknowledged on the
changelog and every record it produced is acknowledged (streams/checkpoint.py), so a crashed worker
re-processes from the last commit; a redelivered event changes no state (the events view knows it), its
timeline record is published again as it was first published (consumers deduplicate it as one record) and
its customer's profile again. exactly_once is not an option on tansu.

Consistency: the identity graph is one state with one writer, so resolution runs on one worker; the
channel events and the commands take turns on it (one lock), and its changelog has one partition, one
delta record per batch, replayed in order.

The changelog comes in generations (state_changelog, then -g1, -g2...): once the one in use holds
streams.changelog_compact_factor times the state's bytes (compaction_due), the worker writes the whole state
as the next generation, follows it, and deletes the old one (compact_changelog), so what a fresh machine
replays stays in proportion to the state, not to the history. RocksDB records the generation it
follows; a restart deletes the others (a newer one is a compaction a kill cut short), and a fresh machine
takes the newest whose snapshot was written whole.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.kafka import (broker_id, consumer_config, delete_topics, ensure_topics, fetched_end_offsets,
                         forget_topics, matching_partitions, matching_topics, producer_config)
from infra.processes import describe_exit, die_with_parent, tune_collector
from infra.vault import open_vault
from infra.settings import Settings
from streams.checkpoint import Checkpoint, send_in_order
from streams.resolver import Outputs, Resolver
from streams.state_migration import needs_migration, tokenized_state
from streams import state_store
from streams.state_store import ChangelogReplay, StateStore, delta_records, generation_complete_record

log = logging.getLogger(__name__)

BATCH_MAX_EVENTS = 10_000     # resolved in a thread, but commands wait for it: about a second
BATCH_WAIT_MS = 50            # how long a poll waits for a batch to fill when the topics are quiet
# A load: a poll that returned this many events. The batch then keeps gathering for up to LOAD_BATCH_SECONDS
# (read_batch). At 2,000 events/s through the webhook (POSTs of 500) a poll holds up to about 600: with 1,000
# the gathering began there too and p99 acceptance -> queryable went from 1.04-1.08 s to 1.48-1.56 s
# (bench_latency.py --seconds 60, two runs each); with 2,500, 1.05 s.
LOAD_POLL_EVENTS = 2_500
LOAD_BATCH_SECONDS = 0.5
TOPIC_REFRESH_SECONDS = 3.0   # how soon a new channel topic is read
FAUST_SESSION_TIMEOUT_MS = 3000
# Customers republished at once, holding the state, when the best-customer threshold moves: one move across
# a tie (many customers with the same 12-month revenue) flipped about 200,000 at 1,000,000 identifiers, and
# resolution stopped for about 25 s (bench_recovery.py, found by py-spy while it was blamed on a compaction).
BEST_FLIPS_PER_TURN = 10_000
COMPACTION_CHECK_SECONDS = 10.0   # how often the worker asks whether its state changelog is due for compaction
COMPACTION_RETRY_SECONDS = 300    # after a failed compaction (each writes the whole state)
CATCH_UP_UNDER_LOCK = 20          # changelog records written during a snapshot left for the switch (about 4 MB)


def state_changelog(settings: Settings) -> str:
    # -v2: identifiers as tokens (streams/state_migration.py); the first one held them in clear
    return f"{settings.streams.app_id}-resolution-state-changelog-v2"


def changelog_generation(settings: Settings, number: int) -> str:
    """The state changelog's generation `number`; 0 is the first (state_changelog)."""
    return state_changelog(settings) + (f"-g{number}" if number else "")


def generation_number(settings: Settings, topic: str) -> int | None:
    found = re.fullmatch(re.escape(state_changelog(settings)) + r"(?:-g([0-9]+))?", topic)
    return None if found is None else int(found.group(1) or 0)


def changelog_generations(settings: Settings, bootstrap: str) -> dict[int, str]:
    """The state changelog's generations on the broker, by number."""
    found = matching_topics(bootstrap, f"^{re.escape(state_changelog(settings))}(-g[0-9]+)?$")
    return {generation_number(settings, topic): topic for topic in found}


def compaction_due(settings: Settings, store: StateStore) -> bool:
    """Whether the generation the state follows is large enough, against the state, to be written anew as a
    snapshot: a bulk load writes about its state's size of changelog, a state that keeps changing more."""
    rules = settings.streams
    state = max(store.changelog_snapshot_bytes, store.state_bytes)
    return store.changelog_bytes >= max(rules.changelog_compact_min_bytes, rules.changelog_compact_factor * state)


async def compact_changelog(settings: Settings, bootstrap: str, store: StateStore, writer: Checkpoint,
                            turn: asyncio.Lock) -> dict:
    """Write the whole state as the changelog's next generation, follow it, delete the one before. Resolution
    goes on meanwhile: the snapshot is written by another process from a point-in-time copy of RocksDB (a
    checkpoint, taken holding the state's lock, `turn`, with every batch applied), and the batches written to
    the old generation after it are written again after the snapshot, then a completion record, then the
    worker follows the new generation (holding the lock again). A kill before that leaves the old generation
    followed and the new one deleted at the next start (a fresh machine takes a new one only if it is
    complete); after it, the old one deleted."""
    started = time.monotonic()
    async with turn:
        await writer.drain()
        writer.apply_acknowledged()
        old = writer.changelog
        replaced = (store.changelog_offset + 1, store.changelog_bytes)
        frozen = store.freeze()
        writer.tee = []   # the changelog records written from now on: to follow the snapshot in the new generation
    paused = time.monotonic() - started
    producer = None
    try:
        # A number never used: a compaction that failed may have left its generation, incomplete.
        existing = await asyncio.to_thread(changelog_generations, settings, bootstrap)
        new = changelog_generation(settings, max([*existing, generation_number(settings, old) or 0]) + 1)
        await asyncio.to_thread(ensure_topics, bootstrap, [new], 1, settings.topics.replication_factor)
        snapshot_records, snapshot = await write_frozen_snapshot(settings, bootstrap, frozen, new)
        writer.crash_point("snapshot")
        producer = AIOKafkaProducer(**producer_config(settings, bootstrap))   # not behind the batches' outputs
        await producer.start()
        caught_up: list[bytes] = []
        while len(writer.tee) > CATCH_UP_UNDER_LOCK:   # what came meanwhile, most of it without the lock
            chunk = writer.tee[:]
            del writer.tee[:len(chunk)]
            await send_in_order(producer, new, chunk)
            caught_up += chunk
        async with turn:
            switching = time.monotonic()
            await writer.drain()
            writer.apply_acknowledged()
            rest, writer.tee = writer.tee, None
            since = caught_up + rest
            tail = rest + [generation_complete_record(uuid.uuid4().hex[:12])]
            offset = await send_in_order(producer, new, tail)
            store.apply({}, offset, writer.broker, topic=new, snapshot_bytes=snapshot,
                        generation_bytes=snapshot + sum(map(len, since)) + len(tail[-1]))
            writer.changelog = new
            paused += time.monotonic() - switching
    finally:
        writer.tee = None
        if producer is not None:
            await producer.stop()
        shutil.rmtree(frozen, ignore_errors=True)   # the snapshot writer deletes it once read; not if it failed
    writer.crash_point("switch")
    superseded = sorted({old, *existing.values()} - {new})
    forget_topics(writer.producer, superseded)
    deleted = await delete_generations(bootstrap, superseded)
    report = {"from": old, "to": new, "records_replaced": replaced[0], "mb_replaced": round(replaced[1] / 1e6, 1),
              "snapshot_records": snapshot_records, "snapshot_mb": round(snapshot / 1e6, 1),
              "records_during_snapshot": len(since), "old_deleted": old in deleted,
              "seconds": round(time.monotonic() - started, 3), "paused_seconds": round(paused, 3)}
    log.info("resolution state's changelog compacted: %s", report)
    return report


async def write_frozen_snapshot(settings: Settings, bootstrap: str, frozen: Path, topic: str) -> tuple[int, int]:
    """The frozen state written to `topic` by a process of its own (streams/snapshot_writer.py says why), which
    dies with the worker: (records, bytes)."""
    kafka = json.loads(settings.kafka.model_dump_json()) | {"bootstrap_servers": bootstrap}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.snapshot_writer", str(frozen), topic, f"snapshot-{uuid.uuid4().hex[:12]}",
        "--part-bytes", str(state_store.MAX_DELTA_BYTES), "--kafka", json.dumps(kafka),
        "--streams", settings.streams.model_dump_json(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent)
    try:
        out, err = await child.communicate()
    except BaseException:   # the worker stopping: the snapshot is not wanted any more
        if child.returncode is None:
            child.kill()
        raise
    if child.returncode != 0:
        said = err.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"the snapshot writer stopped ({describe_exit(child.returncode)}): "
                           f"{said[-1] if said else 'it said nothing'}")
    written = json.loads(out.decode().strip().splitlines()[-1])
    return written["records"], written["bytes"]


async def delete_generations(bootstrap: str, topics: list[str]) -> list[str]:
    """Delete changelog generations the state no longer follows. Failing is not fatal (the state is whole in
    the one it follows): it is said once, and the next start deletes them."""
    try:
        return await asyncio.to_thread(delete_topics, bootstrap, topics)
    except Exception as error:
        log.warning("could not delete the resolution state's old changelog generations %s (the next start "
                    "will): %s: %s", ", ".join(topics), type(error).__name__, error)
        return []


def legacy_state_changelog(settings: Settings) -> str:
    return f"{settings.streams.app_id}-resolution-state-changelog"


def resolution_group(settings: Settings) -> str:
    """Where the channel events' offsets are committed: not the Faust app's own group, whose members
    speak Faust's assignor protocol."""
    return f"{settings.streams.app_id}-resolution"


def create_app(settings: Settings, bootstrap: str, store: StateStore) -> faust.App:
    app = faust.App(
        settings.streams.app_id,
        broker=[f"kafka://{server}" for server in bootstrap.split(",")],
        store="memory://",  # no Faust tables: the resolution state is streams/state_store.py
        processing_guarantee="at_least_once",
        # Faust's own group only carries operator commands, and after a kill -9 a new worker waits for the
        # dead member's session to expire before it joins: a short session makes restarts quick, and a
        # missed heartbeat costs no more than a rejoin (the channel events are read outside this group).
        broker_session_timeout=min(settings.kafka.session_timeout_ms, FAUST_SESSION_TIMEOUT_MS) / 1000,
        broker_heartbeat_interval=min(settings.kafka.heartbeat_interval_ms, FAUST_SESSION_TIMEOUT_MS // 6) / 1000,
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
    topics = settings.topics
    resolver = Resolver(settings, store)
    commands = app.topic(topics.identity_commands, key_serializer="raw", value_serializer="raw")
    # The state has one writer: a batch of events and a command never interleave.
    turn = asyncio.Lock()
    this_broker = broker_id(bootstrap)
    shared: dict = {"checkpoint": None}

    async def checkpoint() -> Checkpoint:
        # Our own producer, not Faust's topic.send: a send per event through Faust costs ~0.8 ms here.
        if shared["checkpoint"] is None:
            producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
            await producer.start()
            shared["checkpoint"] = Checkpoint(store, producer, store.changelog_topic or state_changelog(settings),
                                              this_broker)
        return shared["checkpoint"]

    def resolve_batch(writer: Checkpoint, batch: dict) -> Outputs:
        writer.apply_acknowledged()
        out = Outputs()
        with resolver.vault.batch():  # the keys of the batch's new identifiers, stored before anything sealed leaves
            for tp, messages in batch.items():
                for message in messages:
                    resolver.channel_record(message.value, tp.topic, tp.partition, message.offset, out, message.timestamp)
            return resolver.finish(out)

    @app.task
    async def resolve_channel_events() -> None:
        consumer = AIOKafkaConsumer(**consumer_config(settings, bootstrap, resolution_group(settings)))
        await consumer.start()
        writer = await checkpoint()
        assigned: set[TopicPartition] = set()
        looked_up = 0.0
        try:
            while True:
                if time.monotonic() - looked_up > TOPIC_REFRESH_SECONDS:
                    looked_up = time.monotonic()
                    found = {TopicPartition(topic, partition) for topic, partition in
                             await asyncio.to_thread(matching_partitions, bootstrap, topics.channel_pattern)}
                    if found != assigned:
                        # Positions restart from the committed offsets: commit every batch read so far first.
                        await writer.drain()
                        consumer.assign(sorted(found))
                        log.info("resolving events of %s in batches of up to %d",
                                 ", ".join(sorted({tp.topic for tp in found - assigned})) or "no topic yet",
                                 BATCH_MAX_EVENTS)
                        assigned = found
                    if not assigned:
                        await asyncio.sleep(TOPIC_REFRESH_SECONDS)
                        continue
                batch = await read_batch(consumer)
                if not batch:
                    writer.check()
                    async with turn:
                        writer.apply_acknowledged()
                    continue
                async with turn:
                    # In a thread, so the event loop keeps sending the previous batches and reading their
                    # acknowledgements meanwhile (streams/checkpoint.py): resolution holds the GIL most of the
                    # time, but the broker's round trips no longer wait for it.
                    out = await asyncio.to_thread(resolve_batch, writer, batch)
                    offsets = {tp: messages[-1].offset + 1 for tp, messages in batch.items()}
                    await writer.submit(out.sends, lambda offsets=offsets: consumer.commit(offsets))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # The broker did not acknowledge (or a defect): stop with a clear cause; the hub restarts the
            # worker, which resumes from the state and offsets that were written.
            log.error("resolution stopped: %s: %s", type(error).__name__, error)
            logging.shutdown()
            os._exit(1)
        finally:
            try:  # a clean stop keeps the batches already resolved
                await asyncio.wait_for(writer.drain(), timeout=10)
            except Exception as error:
                log.warning("stopping with batches not acknowledged (they will be read again): %s", error)
            await consumer.stop()
            await writer.producer.stop()   # else asyncio logs an "Unclosed AIOKafkaProducer" error at every stop

    @app.agent(commands, name="identity-commands")
    async def run_commands(stream):
        async for value in stream:
            async with turn:
                out = Outputs()
                try:
                    resolver.command(json.loads(value), out)
                except Exception as error:  # a wrong command must not stop the agent: dead-letter it
                    event = stream.current_event
                    message = event.message if event else None
                    resolver.dead_letter(error, value, topics.identity_commands, message.partition if message else -1,
                                         message.offset if message else -1, out)
                await (await checkpoint()).write(resolver.finish(out).sends)

    compaction = {"next": 0.0}

    @app.timer(interval=COMPACTION_CHECK_SECONDS)
    async def compact_state_changelog():
        writer = await checkpoint()
        if time.monotonic() < compaction["next"] or not compaction_due(settings, store):
            return
        try:
            await compact_changelog(settings, bootstrap, store, writer, turn)
        except Exception as error:   # the state still follows its generation, whole: try again later
            compaction["next"] = time.monotonic() + COMPACTION_RETRY_SECONDS
            log.error("compacting the resolution state's changelog failed (it keeps %s and tries again in %d s): "
                      "%s: %s", writer.changelog, COMPACTION_RETRY_SECONDS, type(error).__name__, error)

    threshold = {"next": 0.0}

    refresh = settings.identity.best_customer_refresh_seconds

    @app.timer(interval=min(5.0, refresh))
    async def best_customer_threshold():
        """The 12-month revenue that puts a customer in the best-customer segment, from all profiles: every
        best_customer_refresh_seconds, or less often when reading every profile takes long (at most a tenth
        of the worker's time)."""
        if time.monotonic() < threshold["next"]:
            return
        started = time.monotonic()
        async with turn:
            out = Outputs()
            left = await asyncio.to_thread(resolver.update_best_threshold, out, BEST_FLIPS_PER_TURN)
            if out.changed:  # the customers whose membership it flipped, published with their state
                await (await checkpoint()).write(resolver.finish(out).sends)
        # Flipped customers left: the next ones at the next tick, the events resolved in between.
        threshold["next"] = 0.0 if left else time.monotonic() + max(refresh, 10 * (time.monotonic() - started))

    return app


async def read_batch(consumer: AIOKafkaConsumer, load_poll_events: int = LOAD_POLL_EVENTS,
                     load_batch_seconds: float = LOAD_BATCH_SECONDS) -> dict[TopicPartition, list]:
    """The next batch of channel events. At a trickle, what one poll returns, at once. Under a load (the poll
    returned at least load_poll_events), more polls for up to load_batch_seconds or until BATCH_MAX_EVENTS:
    a worker that keeps up with a load would otherwise resolve what arrived during its last batch, in many small
    batches, and every batch costs the broker, its object store and the sink about the same whatever its size
    (a produce request per partition, a changelog write, an offset commit, an insert)."""
    started = time.monotonic()
    batch = await consumer.getmany(timeout_ms=BATCH_WAIT_MS, max_records=BATCH_MAX_EVENTS)
    count = sum(len(messages) for messages in batch.values())
    if count < load_poll_events:
        return batch
    while count < BATCH_MAX_EVENTS and (left := started + load_batch_seconds - time.monotonic()) > 0:
        more = await consumer.getmany(timeout_ms=max(1, int(left * 1000)), max_records=BATCH_MAX_EVENTS - count)
        for tp, messages in more.items():   # each partition's events stay in offset order
            batch.setdefault(tp, []).extend(messages)
            count += len(messages)
    return batch


async def write_snapshot(settings: Settings, bootstrap: str, changelog: str, full: dict) -> int:
    """The whole state (as dicts) as one batch on the changelog; returns the offset of its last record."""
    return await write_records(settings, bootstrap, changelog, delta_records(full, f"snapshot-{uuid.uuid4().hex[:12]}"))


async def migrate_state(settings: Settings, bootstrap: str, store: StateStore) -> dict | None:
    """State from before identifiers were tokens: bring it up to date from the old changelog, key it by
    tokens (customer ids unchanged), write it whole to the new changelog and delete the old one, whose
    records hold identifiers in clear. None when there is nothing to migrate."""
    legacy = legacy_state_changelog(settings)
    legacy_exists = legacy in await asyncio.to_thread(matching_topics, bootstrap, f"^{re.escape(legacy)}$")
    owners = store.views["owners"]
    sample = [key for _, key in zip(range(1000), owners)]
    if not legacy_exists and not needs_migration(dict(store.views["meta"].items()), sample):
        return None
    started = time.monotonic()
    if legacy_exists:
        await recover_state(settings, bootstrap, store, legacy)
    full = {name: dict(view.items()) for name, view in store.views.items()}
    migrated = tokenized_state(full, open_vault(settings))
    changelog = state_changelog(settings)
    ensure_topics(bootstrap, [changelog], 1, settings.topics.replication_factor)
    offset = await write_snapshot(settings, bootstrap, changelog, migrated)
    removed = {name: {key: None for key in view if key not in migrated[name]} for name, view in full.items()}
    store.apply({name: {**removed.get(name, {}), **migrated.get(name, {})} for name in migrated}, offset,
                broker_id(bootstrap), topic=changelog)
    deleted = await asyncio.to_thread(delete_topics, bootstrap, [legacy])
    report = {"customers": len(migrated.get("clusters", {})), "identifiers": len(migrated.get("owners", {})),
              "old_changelog_deleted": bool(deleted), "seconds": round(time.monotonic() - started, 3)}
    log.warning("resolution state migrated to identifier tokens (the old changelog held them in clear): %s", report)
    return report


async def recover_state(settings: Settings, bootstrap: str, store: StateStore, changelog: str | None = None) -> dict:
    """Bring the local state up to the changelog's end: only what was written after the offset RocksDB
    holds (everything, on a fresh machine). Without `changelog`, the generation RocksDB follows; on a fresh
    machine the newest whose snapshot is whole. The other generations are deleted. Returns what it did,
    for the log and the benchmark."""
    started = time.monotonic()
    this_broker = broker_id(bootstrap)
    stale: list[str] = []
    if changelog is None:
        generations = await asyncio.to_thread(changelog_generations, settings, bootstrap)
        changelog = store.changelog_topic or state_changelog(settings)
        if store.changelog_offset < 0 and generations:   # a fresh machine
            changelog = generations[max(generations)]
        stale = [topic for topic in generations.values() if topic != changelog]
    ensure_topics(bootstrap, [changelog], 1, settings.topics.replication_factor)
    if store.changelog_broker and store.changelog_broker != this_broker:
        # The broker lost its data (or is another one): keep the local state, so known people keep their ids,
        # and start a new changelog on this broker with a full copy of it.
        log.error("the resolution state's changelog was on broker %s, this broker is %s: keeping the local state "
                  "and writing it to the new changelog", store.changelog_broker, this_broker)
        records = store.snapshot(f"snapshot-{uuid.uuid4().hex[:12]}")
        records.append(generation_complete_record(uuid.uuid4().hex[:12]))
        offset = await write_records(settings, bootstrap, changelog, records)
        size = sum(map(len, records))
        store.apply({}, offset, this_broker, topic=changelog, generation_bytes=size, snapshot_bytes=size)
        return {"replayed_records": 0, "seconds": round(time.monotonic() - started, 3), "snapshot": True}
    fresh = store.changelog_offset < 0
    report = await replay_changelog(settings, bootstrap, store, changelog, this_broker)
    while fresh and generation_number(settings, changelog) and not report["complete"]:
        # A compaction a kill cut short: the new generation was never followed. The one before it is whole.
        log.warning("the resolution state's changelog %s was never completed: recovering from the one before",
                    changelog)
        store.clear()
        stale.append(changelog)
        changelog = generations.get(max([n for n in generations if n < generation_number(settings, changelog)],
                                        default=0), state_changelog(settings))
        stale = [topic for topic in stale if topic != changelog]
        report = await replay_changelog(settings, bootstrap, store, changelog, this_broker)
    if stale and (deleted := await delete_generations(bootstrap, stale)):
        log.warning("deleted the resolution state's changelog generations it does not follow: %s", ", ".join(deleted))
    if not generation_number(settings, changelog):
        report.pop("complete")   # the first generation has no completion record: it began with the state
    report = {"changelog": changelog, **report, "seconds": round(time.monotonic() - started, 3)}
    log.info("resolution state recovered: %s", report)
    return report


async def replay_changelog(settings: Settings, bootstrap: str, store: StateStore, changelog: str, this_broker: str) -> dict:
    """Apply what `changelog` holds past the offset RocksDB has, batch by batch."""
    partition = TopicPartition(changelog, 0)
    consumer = AIOKafkaConsumer(**consumer_config(settings, bootstrap, group_id=None))
    await consumer.start()
    start = store.changelog_offset + 1 if store.changelog_topic in ("", changelog) else 0
    replayed = 0
    # A generation after the first begins with its snapshot: its size decides when it is compacted again.
    replay = ChangelogReplay(store, this_broker, changelog,
                             snapshot_first=start == 0 and bool(generation_number(settings, changelog)))
    try:
        reported = await consumer.end_offsets([partition])
        end = (await fetched_end_offsets(bootstrap, reported))[partition]
        consumer.assign([partition])
        consumer.seek(partition, start)
        position = start
        while position < end:
            batch = await consumer.getmany(partition, timeout_ms=2000, max_records=2000)
            for message in batch.get(partition, []):
                position = message.offset + 1
                replayed += 1
                replay.add(message.value, message.offset)
            if not batch and position < end:
                log.info("recovering the resolution state: at changelog offset %d of %d", position, end)
    finally:
        await consumer.stop()
    return {"from_offset": start, "replayed_records": replayed, "applied_batches": replay.applied,
            "complete": replay.complete}


async def write_records(settings: Settings, bootstrap: str, changelog: str, records: list[bytes]) -> int:
    """Changelog records, in order, acknowledged; returns the offset of the last."""
    producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
    await producer.start()
    try:
        return await send_in_order(producer, changelog, records)
    finally:
        await producer.stop()


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "info") -> None:
    """Run one Faust worker in the foreground until SIGTERM/SIGINT."""
    store = StateStore(Path(settings.data_dir) / "state")

    async def prepare() -> None:
        await migrate_state(settings, bootstrap, store)
        await recover_state(settings, bootstrap, store)

    asyncio.run(prepare())
    tune_collector(freeze=True)   # the recovered state is long-lived: no collection needs to walk it again
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run closed its loop; Faust needs one
    app = create_app(settings, bootstrap, store)
    worker = faust.Worker(app, loglevel=loglevel, override_logging=False)
    worker.execute_from_commandline()
