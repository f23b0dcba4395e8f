"""Benchmark (not a test): how soon a worker resolves again after kill -9, with a large identity graph.

    python tests/benchmarks/bench_recovery.py [--identifiers 1000000]

Builds a resolution state of N known identifiers (one customer each) through the worker's own state
store and changelog on the embedded broker (on disk), then times, from the worker process's start to
the timeline record of a new event about a known person:
- a first start (local RocksDB up to date),
- a restart after kill -9 of the worker,
- a fresh machine (no local state: the whole changelog is replayed).
Prints each, the recovery the worker logged, and the worker's peak memory.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from infra.broker import EmbeddedBroker  # noqa: E402
from infra.hub import WorkerProcess  # noqa: E402
from infra.kafka import broker_id, consumer_config, ensure_topics, producer_config  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from schemas.serde import codec  # noqa: E402
from infra.vault import open_vault  # noqa: E402
from streams.app import state_changelog  # noqa: E402
from streams.identity import customer_id_for  # noqa: E402
from streams.state_store import StateStore  # noqa: E402

BATCH = 10_000


async def build_state(settings, bootstrap: str, identifiers: int) -> float:
    """N people, one email each, written as the worker writes its batches; returns seconds."""
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
            for i in range(start, min(start + BATCH, identifiers)):
                # as the worker keys identifiers since they are tokens (else its first start migrates the state)
                key = "email:" + vault.token(f"email:person{i}@example.com")
                customer = customer_id_for(key)
                views["owners"][key] = customer
                views["clusters"][customer] = {"identifiers": [key], "seq": i, "version": 1, "separated": []}
            views["meta"]["seq"] = min(start + BATCH, identifiers)
            delta = store.take_delta()
            parts = delta.records(f"bench-{start}")
            acks = await asyncio.gather(*[await producer.send(changelog, part, partition=0) for part in parts])
            store.apply(delta, acks[-1].offset, this_broker)
    finally:
        await producer.stop()
        store.close()
    return time.perf_counter() - started


def channel_event(n: int, person: int) -> dict:
    return {"event_id": f"bench-recovery-{n}", "channel": "web", "event_type": "order", "source_id": f"W-R{n}", "connector": "bench",
            "occurred_at": datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc), "total_minor": 1000, "currency": "EUR",
            "identifiers": [{"kind": "email", "value": f"person{person}@example.com", "platform": None}],
            "lines": [], "shipping_cost_minor": None, "discount_minor": None, "campaign": None,
            "related_order_id": None, "status": None, "text": None, "attributes": {}}


async def resolved_after(settings, bootstrap: str, event: dict, started: float, timeout: float = 600) -> float:
    """Send one event; seconds from `started` until its timeline record is on the topic."""
    producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
    await producer.start()
    try:
        await producer.send_and_wait("channel.bench", codec("channel_event").encode(event), key=event["event_id"].encode())
    finally:
        await producer.stop()
    decode = codec("timeline_event").decode
    consumer = AIOKafkaConsumer(settings.topics.customer_timeline, **consumer_config(settings, bootstrap, group_id=None))
    await consumer.start()
    try:
        while time.monotonic() - started < timeout:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                if any(decode(m.value)["event_id"] == event["event_id"] for m in messages):
                    return time.monotonic() - started
        raise RuntimeError(f"event {event['event_id']} not resolved within {timeout} s")
    finally:
        await consumer.stop()


def recovery_line(worker: WorkerProcess) -> str:
    lines = [line for line in worker.log_file.read_text(errors="replace").splitlines() if "state recovered" in line]
    return re.sub(r"^.*state recovered: ", "", lines[-1]) if lines else "?"


def peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identifiers", type=int, default=1_000_000)
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
            print(f"state of {args.identifiers:,} identifiers built through the changelog in {built:.0f} s", flush=True)
            figures = []
            for case, n in (("first start, local state up to date", 1), ("restart after kill -9", 2),
                            ("fresh machine: no local state, whole changelog replayed", 3)):
                if n == 3:
                    import shutil

                    shutil.rmtree(Path(settings.data_dir) / "state")
                started = time.monotonic()
                worker = WorkerProcess(settings, bootstrap).start()
                seconds = asyncio.run(resolved_after(settings, bootstrap, channel_event(n, n * 1000), started))
                memory = peak_mb(worker.process.pid)
                print(f"  {case}: resolving after {seconds:.1f} s (recovery: {recovery_line(worker)}); worker peak "
                      f"memory {memory:,.0f} MB", flush=True)
                figures.append(seconds)
                if n == 1:
                    os.kill(worker.process.pid, signal.SIGKILL)
                    worker.process.wait()
                else:
                    worker.stop()
    print(json.dumps({"identifiers": args.identifiers, "first_start_s": round(figures[0], 1),
                      "after_kill_s": round(figures[1], 1), "fresh_machine_s": round(figures[2], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
