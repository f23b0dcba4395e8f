"""Benchmark (not a test): how soon a worker resolves again after kill -9, with a large identity graph.

    python tests/benchmarks/bench_recovery.py [--identifiers 1000000]

Builds a resolution state of N known identifiers (one customer each) through the worker's own state
store and changelog on the embedded broker (on disk), as a live hub holds them: each identifier's key in
the vault (one SQLite row each) and its value sealed under it in the state. Then times, from the worker
process's start to the timeline records of two new events about known people, sealed as a connector
seals them (a web order, and a support ticket, whose text the worker opens with a person's key):
- a first start (local RocksDB up to date),
- a restart after kill -9 of the worker,
- a fresh machine (no local state: the whole changelog is replayed; the vault stays, as the hub's
  data folder holds it),
then compacts the changelog with the worker's own function (streams/app.py compact_changelog, which the
worker's timer runs once the generation outgrows the state; built in batches of new identifiers, this one
has not) and times a fresh machine again, which now replays the snapshot. Prints each, the recovery the
worker logged, the compaction (how long, and how long the state's lock was held: resolution waits only
for that), and the worker's peak memory.

Last, the compaction as a live worker meets it: a steady load (--load-rate events/s of known and new people
for --load-seconds, sealed as connectors seal them) through a worker whose compaction is due once its
generation outgrows the snapshot by a few percent (--compact-factor), so it compacts during the load. Prints
each compaction the worker logged, and the time from each event's send to its timeline record (p50, p99, max)
for events sent while a compaction ran and for the others, with the events not yet resolved sampled every
second.
"""
from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from connectors.privacy import EdgeSealer  # noqa: E402
from infra.broker import EmbeddedBroker  # noqa: E402
from infra.hub import WorkerProcess  # noqa: E402
from infra.kafka import broker_id, consumer_config, ensure_topics, producer_config  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from schemas.serde import codec  # noqa: E402
from infra.vault import open_vault  # noqa: E402
from streams.app import compact_changelog, resolution_group, state_changelog  # noqa: E402
from tests.benchmarks.bench_latency import LagSampler, percentile  # noqa: E402
from tests.benchmarks.bench_summary import record  # noqa: E402
from tests.benchmarks.cpu_usage import cpu_by_role  # noqa: E402
from streams.checkpoint import Checkpoint  # noqa: E402
from streams.identity import customer_id_for  # noqa: E402
from streams.state_store import StateStore  # noqa: E402

BATCH = 10_000


async def build_state(settings, bootstrap: str, identifiers: int) -> float:
    """N people, one email each, written as the worker writes its batches, each email's key in the vault and
    its value sealed under it, as the connectors leave them; returns seconds."""
    started = time.perf_counter()
    store = StateStore(Path(settings.data_dir) / "state")
    changelog = state_changelog(settings)
    ensure_topics(bootstrap, [changelog], 1, 1)
    producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
    await producer.start()
    views, this_broker = store.views, broker_id(bootstrap)
    vault = open_vault(settings)
    try:
        for start in range(0, identifiers, BATCH):
            with vault.batch():
                for i in range(start, min(start + BATCH, identifiers)):
                    # as the worker keys identifiers since they are tokens (else its first start migrates the state)
                    canonical = f"email:person{i}@example.com"
                    key = "email:" + vault.token(canonical)
                    customer = customer_id_for(key)
                    views["owners"][key] = customer
                    views["clusters"][customer] = {"identifiers": [key], "seq": i, "version": 1, "separated": []}
                    views["sealed"][key] = vault.seal(key, canonical).hex()
            views["meta"]["seq"] = min(start + BATCH, identifiers)
            delta = store.take_delta()
            parts = delta.records(f"bench-{start}")
            acks = await asyncio.gather(*[await producer.send(changelog, part, partition=0) for part in parts])
            store.apply(delta, acks[-1].offset, this_broker)
    finally:
        await producer.stop()
        store.close()
    return time.perf_counter() - started


def channel_events(n: int, person: int) -> list[dict]:
    """A web order of one known person and a support ticket of another, as mapped (before sealing)."""
    at = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
    common = {"connector": "bench", "occurred_at": at, "lines": [], "shipping_cost_minor": None, "discount_minor": None,
              "campaign": None, "related_order_id": None}
    order = {**common, "event_id": f"bench-recovery-order-{n}", "channel": "web", "event_type": "order",
             "source_id": f"W-R{n}", "total_minor": 1000, "currency": "EUR", "status": None, "text": None,
             "identifiers": [{"kind": "email", "value": f"person{person}@example.com", "platform": None}],
             "attributes": {"shipping_city": "Lyon"}}
    ticket = {**common, "event_id": f"bench-recovery-ticket-{n}", "channel": "support", "event_type": "ticket_update",
              "source_id": f"T-R{n}", "total_minor": None, "currency": None, "status": "open",
              "text": "Where is my order?", "attributes": {"contact_channel": "phone"},
              "identifiers": [{"kind": "email", "value": f"person{person + 1}@example.com", "platform": None}]}
    return [order, ticket]


async def resolved_after(settings, bootstrap: str, events: list[dict], started: float, timeout: float = 600) -> float:
    """Send the events, sealed as a connector seals them; seconds from `started` until all their timeline
    records are on the topic."""
    sealer = EdgeSealer(settings)
    encode = codec("channel_event").encode
    producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait("channel.bench", encode(sealer.seal_event(event)), key=event["event_id"].encode())
    finally:
        await producer.stop()
    timeline, profiles = settings.topics.customer_timeline, settings.topics.customer_profiles
    decode_timeline, decode_profile = codec("timeline_event").decode, codec("customer_profile").decode
    waiting = {event["event_id"] for event in events}
    # The ticket's contact channel is in what the connector sealed: on the profile only if the worker opened it.
    ticket = events[-1]
    ticket_customer = customer_id_for("email:" + sealer.vault.token(f"email:{ticket['identifiers'][0]['value']}"))
    opened = False
    consumer = AIOKafkaConsumer(timeline, profiles, **consumer_config(settings, bootstrap, group_id=None))
    await consumer.start()
    try:
        while time.monotonic() - started < timeout:
            for partition, messages in (await consumer.getmany(timeout_ms=200)).items():
                if partition.topic == timeline:
                    waiting -= {decode_timeline(m.value)["event_id"] for m in messages}
                else:
                    opened = opened or any(m.key.decode() == ticket_customer and m.value is not None
                                           and decode_profile(m.value)["last_contact_channel"]
                                           == ticket["attributes"]["contact_channel"] for m in messages)
            if not waiting and opened:
                return time.monotonic() - started
        raise RuntimeError(f"events {sorted(waiting)} not resolved, or the ticket's details not opened "
                           f"({opened}), within {timeout} s")
    finally:
        await consumer.stop()


def vault_keys(settings) -> int:
    return open_vault(settings)._db().execute("SELECT count(*) FROM subject_keys").fetchone()[0]


async def compact(settings, bootstrap: str) -> dict:
    """What the worker's timer does when the changelog is due (the worker stopped: its state's one writer)."""
    store = StateStore(Path(settings.data_dir) / "state")
    producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
    await producer.start()
    try:
        writer = Checkpoint(store, producer, store.changelog_topic or state_changelog(settings), broker_id(bootstrap))
        return await compact_changelog(settings, bootstrap, store, writer, asyncio.Lock())
    finally:
        await producer.stop()
        store.close()


def recovery_line(worker: WorkerProcess) -> str:
    lines = [line for line in worker.log_file.read_text(errors="replace").splitlines() if "state recovered" in line]
    return re.sub(r"^.*state recovered: ", "", lines[-1]) if lines else "?"


def peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def load_events(identifiers: int, count: int, seed: int = 11) -> list[dict]:
    """Orders and support tickets, most of known people, a tenth of people not seen before, as mapped."""
    rng = random.Random(seed)
    events = []
    for n in range(count):
        person = identifiers + n if n % 10 == 0 else rng.randrange(identifiers - 1)
        order, ticket = channel_events(n, person)
        event = ticket if n % 4 == 1 else order
        event["event_id"] = f"bench-load-{n}"
        event["identifiers"][0]["value"] = f"person{person}@example.com"
        events.append(event)
    return events


async def offer_steadily(settings, bootstrap: str, encoded: list[tuple[str, bytes]], rate: int,
                         sent: dict[str, float]) -> None:
    """Send the encoded events at `rate` a second, in tenths of a second, noting each one's send time."""
    producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
    await producer.start()
    try:
        per_tick, began = max(1, rate // 10), time.time()
        for tick, start in enumerate(range(0, len(encoded), per_tick)):
            await asyncio.sleep(max(0.0, began + tick / 10 - time.time()))
            now = time.time()
            for event_id, value in encoded[start:start + per_tick]:
                sent[event_id] = now
                await producer.send("channel.bench", value, key=event_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def resolved_times(settings, bootstrap: str, sent: dict[str, float], expected: int, done: asyncio.Event,
                         resolved: dict[str, float], timeout: float) -> list[int]:
    """Note when each sent event's timeline record arrives; sample the events sent but not yet resolved every
    second. Returns the samples."""
    decode = codec("timeline_event").decode
    consumer = AIOKafkaConsumer(settings.topics.customer_timeline, **consumer_config(settings, bootstrap, group_id=None))
    await consumer.start()
    lag = LagSampler(bootstrap, [resolution_group(settings)])
    await lag.start()
    samples, next_sample, deadline = [], time.time() + 1, time.time() + timeout
    cpu_before = cpu_by_role("benchmark")
    try:
        while len(resolved) < expected and time.time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for message in messages:
                    event_id = decode(message.value)["event_id"]
                    if event_id in sent and event_id not in resolved:
                        resolved[event_id] = now
            if time.time() >= next_sample and not done.is_set():
                cpu = cpu_by_role("benchmark")
                # not yet on the timeline topic; the worker's own lag; CPU of each role over the last second
                samples.append((len(sent) - len(resolved), (await lag.sample())[resolution_group(settings)],
                                {role: cpu[role] - cpu_before.get(role, 0.0) for role in cpu}))
                cpu_before = cpu
                next_sample += 1
            if len(sent) == expected:
                done.set()
    finally:
        await consumer.stop()
        await lag.stop()
    return samples


def compactions_logged(worker: WorkerProcess) -> list[dict]:
    """The compactions in the worker's log, each with its start and end (epoch seconds)."""
    found = []
    for line in worker.log_file.read_text(errors="replace").splitlines():
        if "changelog compacted: " in line:
            ended = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
            report = ast.literal_eval(line.partition("changelog compacted: ")[2])
            found.append({**report, "start": ended - report["seconds"], "end": ended})
    return found


def state_sizes(settings, settle: bool = False) -> str:
    """What the compaction policy weighs; with settle, after RocksDB merged its files (as it does in time),
    so that its estimate of the state no longer counts superseded values."""
    store = StateStore(Path(settings.data_dir) / "state")
    try:
        if settle:
            store.db.flush()
            store.db.compact_range(None, None)
        return (f"generation {store.changelog_bytes / 1e6:,.1f} MB, its snapshot {store.changelog_snapshot_bytes / 1e6:,.1f} MB, "
                f"RocksDB's estimate {store.state_bytes / 1e6:,.1f} MB")
    finally:
        store.close()


def percentiles(latencies: list[float]) -> str:
    if not latencies:
        return "none"
    return (f"p50 {percentile(latencies, 0.5):.2f} s   p99 {percentile(latencies, 0.99):.2f} s   "
            f"max {max(latencies):.2f} s   ({len(latencies):,} events)")


def compaction_under_load(settings, bootstrap: str, identifiers: int, rate: int, seconds: int, factor: float,
                          keep_log: str | None = None) -> dict:
    """A worker compacting while a steady load flows through it: latency while compacting and otherwise."""
    events = load_events(identifiers, rate * seconds)
    sealer, encode = EdgeSealer(settings), codec("channel_event").encode
    encoded = []
    for start in range(0, len(events), BATCH):   # new people's keys stored a batch at a time, as connectors do
        with sealer.vault.batch():
            encoded += [(event["event_id"], encode(sealer.seal_event(event))) for event in events[start:start + BATCH]]
    # Due once the generation outgrows the snapshot it starts with by `factor`: within the load, then again.
    streams = settings.streams.model_copy(update={"changelog_compact_factor": factor, "changelog_compact_min_bytes": 1})
    worker = WorkerProcess(settings.model_copy(update={"streams": streams}), bootstrap)
    print(f"  before the load: {state_sizes(settings, settle=True)}", flush=True)
    already = len(compactions_logged(worker)) if worker.log_file.exists() else 0
    worker.start()
    asyncio.run(resolved_after(settings, bootstrap, channel_events(5, 5000), time.monotonic()))   # resolving

    async def run() -> tuple[dict[str, float], dict[str, float], list[int]]:
        sent, resolved, done = {}, {}, asyncio.Event()
        watching = asyncio.create_task(resolved_times(settings, bootstrap, sent, len(encoded), done, resolved,
                                                      timeout=seconds + 300))
        await offer_steadily(settings, bootstrap, encoded, rate, sent)
        return sent, resolved, await watching

    try:
        sent, resolved, backlog = asyncio.run(run())
        memory = peak_mb(worker.process.pid)
    finally:
        worker.stop()
    print(f"  after the load: {state_sizes(settings)}", flush=True)
    if keep_log:
        shutil.copy(worker.log_file, keep_log)
    compactions = compactions_logged(worker)[already:]
    during = [resolved[e] - at for e, at in sent.items() if e in resolved
              and any(c["start"] <= at <= c["end"] for c in compactions)]
    outside = [resolved[e] - at for e, at in sent.items() if e in resolved
               and not any(c["start"] <= at <= c["end"] for c in compactions)]
    return {"compactions": compactions, "during": during, "outside": outside, "sent": len(sent),
            "unresolved": len(sent) - len(resolved), "backlog": backlog, "memory": memory}


def print_under_load(result: dict, rate: int, seconds: int) -> None:
    print(f"  compaction under load: {result['sent']:,} events offered at {rate:,}/s for {seconds} s, "
          f"{result['unresolved']:,} not resolved; worker peak memory {result['memory']:,.0f} MB", flush=True)
    for c in result["compactions"]:
        print(f"    compacted in {c['seconds']:.1f} s (the state's lock held {c['paused_seconds']:.2f} s): "
              f"{c['records_replaced']:,} records ({c['mb_replaced']:,.0f} MB) replaced by a snapshot of "
              f"{c['snapshot_mb']:,.0f} MB, {c['records_during_snapshot']:,} batches written meanwhile caught up",
              flush=True)
    if not result["compactions"]:
        print("    no compaction ran during the load: raise --load-seconds or lower --compact-factor", flush=True)
    print(f"    send to timeline record, sent while compacting: {percentiles(result['during'])}", flush=True)
    print(f"    send to timeline record, sent otherwise:        {percentiles(result['outside'])}", flush=True)
    samples = result["backlog"]
    backlog = sorted(sample[0] for sample in samples) or [0]
    print(f"    events sent and not on the timeline, sampled each second: median {backlog[len(backlog) // 2]:,}, "
          f"max {backlog[-1]:,} ({len(backlog)} samples); by 10 s:", flush=True)
    for i in range(0, len(samples), 10):
        window = samples[i:i + 10]
        cpu: dict[str, float] = {}
        for _, _, used in window:
            for role, seconds in used.items():
                cpu[role] = cpu.get(role, 0.0) + seconds
        busy = ", ".join(f"{role} {seconds / len(window):.0%}" for role, seconds in sorted(cpu.items()) if seconds >= 0.05)
        print(f"      {i:>4} s: not on the timeline {max(s[0] for s in window):>7,}, the worker's lag "
              f"{max(s[1] for s in window):>7,}; CPU of a core: {busy}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identifiers", type=int, default=1_000_000)
    parser.add_argument("--load-rate", type=int, default=2_000, help="events a second offered while compacting")
    parser.add_argument("--load-seconds", type=int, default=150,
                        help="long enough for a paced compaction of 1,000,000 identifiers to start and end within")
    parser.add_argument("--compact-factor", type=float, default=1.05,
                        help="the generation against the snapshot at which the loaded worker compacts")
    parser.add_argument("--worker-log", help="copy the loaded worker's log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnihub-recovery-") as tmp:
        workdir = Path(tmp)
        with EmbeddedBroker(workdir / "logs", "disk", disk_dir=workdir / "broker") as broker:
            bootstrap = broker.bootstrap_servers
            settings = load_settings(None, data_dir=workdir / "data")
            settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})})
            ensure_topics(bootstrap, settings.topics.all_names() + ["channel.bench"], settings.topics.partitions, 1,
                          (settings.topics.customer_profiles,))
            built = asyncio.run(build_state(settings, bootstrap, args.identifiers))
            print(f"state of {args.identifiers:,} identifiers built through the changelog in {built:.0f} s, their "
                  f"{vault_keys(settings):,} keys in the vault", flush=True)
            figures, memories = [], []
            compaction: dict = {}
            for case, n in (("first start, local state up to date", 1), ("restart after kill -9", 2),
                            ("fresh machine: no local state, whole changelog replayed", 3),
                            ("fresh machine after the compaction: the snapshot replayed", 4)):
                if n == 4:   # the changelog compacted, then the machine lost again
                    compaction = asyncio.run(compact(settings, bootstrap))
                    print(f"  compaction: {compaction['records_replaced']:,} changelog records "
                          f"({compaction['mb_replaced']:,.0f} MB) replaced by a snapshot of "
                          f"{compaction['snapshot_records']:,} ({compaction['snapshot_mb']:,.0f} MB) in "
                          f"{compaction['seconds']:.1f} s, of which the state's lock was held "
                          f"{compaction['paused_seconds']:.2f} s", flush=True)
                if n >= 3:
                    shutil.rmtree(Path(settings.data_dir) / "state")
                started = time.monotonic()
                worker = WorkerProcess(settings, bootstrap).start()
                seconds = asyncio.run(resolved_after(settings, bootstrap, channel_events(n, n * 1000), started))
                memory = peak_mb(worker.process.pid)
                print(f"  {case}: resolving after {seconds:.1f} s (recovery: {recovery_line(worker)}); worker peak "
                      f"memory {memory:,.0f} MB", flush=True)
                figures.append(seconds)
                memories.append(memory)
                if n == 1:
                    os.kill(worker.process.pid, signal.SIGKILL)
                    worker.process.wait()
                else:
                    worker.stop()
            under_load = compaction_under_load(settings, bootstrap, args.identifiers, args.load_rate,
                                               args.load_seconds, args.compact_factor, args.worker_log)
            print_under_load(under_load, args.load_rate, args.load_seconds)
    record("bench_recovery", identifiers=args.identifiers, first_start_s=figures[0], after_kill_s=figures[1],
           fresh_machine_s=figures[2], worker_peak_mb=max(memories + [under_load["memory"]]))
    print(json.dumps({"identifiers": args.identifiers, "first_start_s": round(figures[0], 1),
                      "after_kill_s": round(figures[1], 1), "fresh_machine_s": round(figures[2], 1),
                      "compaction_s": compaction["seconds"], "compaction_paused_s": compaction["paused_seconds"],
                      "fresh_machine_after_compaction_s": round(figures[3], 1),
                      "compactions_under_load": len(under_load["compactions"]),
                      "compaction_under_load_s": [c["seconds"] for c in under_load["compactions"]],
                      "p99_while_compacting_s": round(percentile(under_load["during"] or [0.0], 0.99), 2),
                      "p99_otherwise_s": round(percentile(under_load["outside"] or [0.0], 0.99), 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
