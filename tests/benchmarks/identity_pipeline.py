"""The real pipeline for the identity evaluation and benchmark: a generated scenario loaded by the
connectors into an embedded broker (on disk, as the hub runs it), then resolved by a Faust worker
process, timed."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from connectors.config import bundled_configs
from connectors.runtime import Connector
from infra.broker import EmbeddedBroker
from infra.hub import WorkerProcess, channel_topics
from infra.kafka import consumer_config, consumer_lag, ensure_topics, read_topic
from infra.settings import load_settings
from schemas.serde import codec
from streams.app import resolution_group


async def raw_consume_rate(settings, bootstrap: str, topics: list[str]) -> tuple[int, float]:
    """(records, records/s) reading the channel topics with a plain aiokafka consumer group."""
    consumer = AIOKafkaConsumer(*topics, **consumer_config(settings, bootstrap, group_id="bench-raw-consume"))
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        started, count, last = time.perf_counter(), 0, time.perf_counter()
        while batch := await consumer.getmany(timeout_ms=2000, max_records=10_000):
            count += sum(len(m) for m in batch.values())
            last = time.perf_counter()
        return count, count / (last - started)
    finally:
        await consumer.stop()


async def follow_timeline(settings, bootstrap: str, expected: int, worker: WorkerProcess, timeout: float) -> tuple[dict, float, float]:
    """Latest customer id per event id on the timeline; seconds until every event was there, from the
    worker's start and from its first output (the worker's start-up and group join excluded)."""
    decode = codec("timeline_event").decode
    consumer = AIOKafkaConsumer(settings.topics.customer_timeline, **consumer_config(settings, bootstrap, group_id=None))
    await consumer.start()
    started = time.perf_counter()
    seen: dict[str, str] = {}
    first = None
    try:
        while len(seen) < expected:
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{len(seen)}/{expected} events resolved after {timeout} s; see {worker.log_file}")
            for messages in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                first = first or time.perf_counter()
                for message in messages:
                    record = decode(message.value)
                    seen[record["event_id"]] = record["customer_id"]
        done = time.perf_counter()
        return seen, done - started, done - first
    finally:
        await consumer.stop()


async def committed_everything(settings, bootstrap: str, timeout: float) -> None:
    """Until the worker committed every channel record it read: then every record it published for them
    (timeline, merges, profiles) is acknowledged, and stopping it loses nothing."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        rows = await consumer_lag(bootstrap, [resolution_group(settings)])
        if rows and all(committed >= end for _, _, committed, end in rows):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the worker had not committed every channel record after {timeout} s")


async def resolve_through_pipeline(folder: Path, workdir: Path, expected_events: int, timeout: float = 3600) -> tuple[dict, dict]:
    """(event id -> current customer id, figures) for the scenario in folder."""
    settings = load_settings(None, data_dir=workdir)
    with EmbeddedBroker(workdir / "logs", settings.kafka.embedded_storage) as broker:
        bootstrap = broker.bootstrap_servers
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})})
        ensure_topics(bootstrap, settings.topics.all_names() + channel_topics(settings), settings.topics.partitions,
                      settings.topics.replication_factor, (settings.topics.customer_profiles,))
        accepted = 0
        for config in bundled_configs():
            connector = Connector(settings, bootstrap, config)
            path = next(folder.glob(f"{connector.config.name}.*"))
            accepted += (await connector.run_file(path)).accepted
        raw_records, raw_rate = await raw_consume_rate(settings, bootstrap, channel_topics(settings))
        worker = WorkerProcess(settings, bootstrap).start()
        try:
            seen, seconds, steady_seconds = await follow_timeline(settings, bootstrap, accepted, worker, timeout)
            await committed_everything(settings, bootstrap, timeout=60)
            peak_kb = int(next(line.split()[1] for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines()
                               if line.startswith("VmHWM")))
        finally:
            worker.stop()
        merges = await read_topic(settings, bootstrap, settings.topics.identity_merges, idle_seconds=1.0)
    aliases = {}
    decode = codec("identity_merge").decode
    for record in merges:
        merge = decode(record.value)
        if merge["action"] == "merge":
            aliases[merge["absorbed_id"]] = merge["surviving_id"]

    def current(customer_id: str) -> str:
        while customer_id in aliases:
            customer_id = aliases[customer_id]
        return customer_id

    figures = {"events": accepted, "seconds": seconds, "events_per_second": accepted / steady_seconds,
               "events_per_second_with_start": accepted / seconds,
               "raw_records": raw_records, "raw_per_second": raw_rate, "merges": len(merges),
               "worker_peak_mb": peak_kb / 1024}
    return {event: current(customer) for event, customer in seen.items()}, figures
