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
from infra.progress import progress_bar
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


async def follow_commits(settings, bootstrap: str, expected: int, worker: WorkerProcess, timeout: float) -> tuple[float, float, int]:
    """Watch the worker's committed offsets (every record it commits is resolved and its outputs
    acknowledged) until it committed `expected` channel records. Returns (seconds from its start, seconds
    from its first commit, records committed at that first commit): the worker's start-up and group join,
    and its first batch, are left out of the second figure. Nothing else reads meanwhile, so the worker has
    the machine to itself."""
    started = time.perf_counter()
    with progress_bar(expected, "worker resolving", unit="events") as bar:
        return await _wait_for_commits(worker, settings, bootstrap, expected, timeout, started, bar)


async def _wait_for_commits(worker, settings, bootstrap, expected, timeout, started, bar) -> tuple[float, float, int]:
    first, first_committed = None, 0
    while True:
        if worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.process.returncode}); see {worker.log_file}")
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"the worker had not resolved {expected} events after {timeout} s; see {worker.log_file}")
        committed = sum(c for _, _, c, _ in await consumer_lag(bootstrap, [resolution_group(settings)]))
        bar.update(min(committed, expected) - bar.n)
        now = time.perf_counter()
        if committed and first is None:
            first, first_committed = now, committed
        if committed >= expected:
            return now - started, now - first, first_committed
        await asyncio.sleep(0.25)


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
            seconds, steady_seconds, first_batch = await follow_commits(settings, bootstrap, accepted, worker, timeout)
            peak_kb = int(next(line.split()[1] for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines()
                               if line.startswith("VmHWM")))
        finally:
            worker.stop()
        merges = await read_topic(settings, bootstrap, settings.topics.identity_merges, idle_seconds=1.0)
        timeline = await read_topic(settings, bootstrap, settings.topics.customer_timeline, idle_seconds=1.0)
    seen = {}
    decode = codec("timeline_event", timestamps_as_millis=True).decode
    for record in timeline:
        event = decode(record.value)
        seen[event["event_id"]] = event["customer_id"]
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

    if steady_seconds > 0:
        rate = (accepted - first_batch) / steady_seconds
    else:  # a load small enough for the worker's first batch has no steady part to time
        rate = accepted / seconds
        print("  every event was in the worker's first batch: its rate includes the worker's start", flush=True)
    figures = {"events": accepted, "seconds": seconds, "events_per_second": rate,
               "events_per_second_with_start": accepted / seconds,
               "raw_records": raw_records, "raw_per_second": raw_rate, "merges": len(merges),
               "worker_peak_mb": peak_kb / 1024}
    return {event: current(customer) for event, customer in seen.items()}, figures
