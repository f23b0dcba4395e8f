"""Benchmark (not a test): event-to-queryable latency at a steady offered load.

    python tests/benchmarks/bench_latency.py [--rate 2000] [--seconds 300]

The hub on embedded defaults (disk broker, Faust worker, ClickHouse sink) in this process, and the bundled
app-sessions webhook connector. Every 250 ms a client POSTs rate/4 sessions as one JSON array (an SDK sending in batches); a session's
acceptance is the moment its 2xx answer arrives. A session is queryable at its row's ingested_at in
timeline_events (set by ClickHouse when the sink's insert runs). Prints p50/p90/p99/max of acceptance ->
queryable (target p99 under 2 s), the rate actually offered, and the consumer lag of the resolution worker
and of the sink sampled every second.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition as AioPartition  # noqa: E402
from kafka import KafkaAdminClient  # noqa: E402

from connectors.config import bundled_configs_dir  # noqa: E402
from connectors.runtime import Connector  # noqa: E402
from connectors.webhook import Webhook  # noqa: E402
from infra.hub import Hub  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from streams.app import resolution_group  # noqa: E402
from tests.benchmarks.bench_summary import record  # noqa: E402
from tests.benchmarks.scratch import scratch_directory  # noqa: E402

TICK = 0.25


def session(n: int) -> dict:
    return {"session_id": f"lat-{n}", "started_at_ms": int(time.time() * 1000), "user": {"account_id": f"A-{n % 5000}"},
            "device": {"os": "ios", "app_version": "5.2.1"}, "screens": 3, "utm_campaign": "tv-best24"}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def stored(hub: Hub, prefix: str) -> dict[str, int]:
    rows = (await asyncio.to_thread(hub.client.query,
            "SELECT source_id, toUnixTimestamp64Milli(min(ingested_at)) FROM timeline_events "
            "WHERE startsWith(source_id, {p:String}) GROUP BY source_id", parameters={"p": prefix})).result_rows
    return dict(rows)


class LagSampler:
    """Each group's lag (end offset - committed, summed over its partitions), cheaply enough to sample every
    second: one admin client for the committed offsets (kafka-python's: aiokafka's cannot read tansu's
    OffsetFetch answer), one consumer kept at the end of every partition the groups commit, whose fetch
    responses carry the end offsets (tansu's ListOffsets can be too low)."""

    def __init__(self, bootstrap: str, groups: list[str]):
        self.bootstrap, self.groups = bootstrap, groups
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="omnihub-bench-lag")
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                         max_partition_fetch_bytes=64 * 1024)

    async def committed(self, group: str) -> dict:
        offsets = (await asyncio.to_thread(self.admin.list_group_offsets, group))[group]
        return {AioPartition(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}

    async def start(self) -> None:
        await self.consumer.start()
        partitions = set()
        for group in self.groups:
            partitions |= set(await self.committed(group))
        self.consumer.assign(sorted(partitions))
        await self.consumer.seek_to_end(*partitions)

    async def sample(self) -> dict[str, int]:
        await self.consumer.getmany(timeout_ms=100)  # records are dropped: only the fetches' end offsets matter
        lag = {}
        for group in self.groups:
            committed = await self.committed(group)
            if new := set(committed) - self.consumer.assignment():  # a partition the group committed first now
                self.consumer.assign(sorted(self.consumer.assignment() | new))
                await self.consumer.seek_to_end(*new)
                await self.consumer.getmany(*new, timeout_ms=100)
            lag[group] = sum(max(0, (self.consumer.highwater(tp) or 0) - offset) for tp, offset in committed.items())
        return lag

    async def stop(self) -> None:
        await self.consumer.stop()
        self.admin.close()


async def sample_lag(sampler: LagSampler, samples: list[dict], stop: asyncio.Event) -> None:
    await sampler.start()
    try:
        while not stop.is_set():
            samples.append(await sampler.sample())
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
    finally:
        await sampler.stop()


async def run(settings, rate: int, seconds: float) -> None:
    async with Hub(settings, serve_queries=False) as hub:
        connector = Connector(settings, hub.bootstrap, bundled_configs_dir() / "app-sessions.yaml")
        connector.config.source.port = 0
        webhook = await Webhook(connector).start()
        accepted_at: dict[str, int] = {}
        answer_seconds: list[float] = []   # each POST's round trip: what a client waits for the webhook's answer
        async with aiohttp.ClientSession() as client:
            async def post(first: int, count: int) -> None:
                body = [session(n) for n in range(first, first + count)]
                posted = time.perf_counter()
                async with client.post(webhook.address, json=body) as answer:
                    if answer.status >= 300:
                        raise RuntimeError(f"webhook answered {answer.status}: {await answer.text()}")
                answer_seconds.append(time.perf_counter() - posted)
                now = int(time.time() * 1000)
                for record in body:
                    accepted_at[record["session_id"]] = now

            # Warm-up: the worker and the sink are running and have read the topic once.
            await post(0, 10)
            while len(await stored(hub, "lat-")) < 10:
                await asyncio.sleep(0.5)
            accepted_at.clear()
            answer_seconds.clear()
            groups = [resolution_group(settings), settings.sink.group_id]
            lags: list[dict] = []
            stop = asyncio.Event()
            sampler = asyncio.ensure_future(sample_lag(LagSampler(hub.bootstrap, groups), lags, stop))
            per_tick, n, started = max(1, int(rate * TICK)), 10, time.perf_counter()
            pending = set()
            tick = 0
            while time.perf_counter() - started < seconds:
                pending.add(asyncio.ensure_future(post(n, per_tick)))
                n += per_tick
                tick += 1
                for task in [task for task in pending if task.done()]:
                    pending.discard(task)
                    task.result()  # a refused request stops the benchmark with its answer
                await asyncio.sleep(max(0.0, started + tick * TICK - time.perf_counter()))
            await asyncio.gather(*pending)
            offered_seconds = time.perf_counter() - started
            deadline = time.monotonic() + 120
            while len(seen := await stored(hub, "lat-")) < len(accepted_at) + 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            stop.set()
            await sampler
        await webhook.stop()
    latencies = [(seen[sid] - at) / 1000 for sid, at in accepted_at.items() if sid in seen]
    missing = len(accepted_at) - len(latencies)
    print(f"latency, acceptance by the webhook connector -> queryable in ClickHouse (embedded defaults, this machine):")
    print(f"  offered {len(accepted_at):,} sessions in {offered_seconds:.0f} s = {len(accepted_at) / offered_seconds:,.0f}/s "
          f"(asked {rate:,}/s); {missing:,} not queryable 120 s after the end")
    print(f"  p50 {percentile(latencies, 0.5):.2f} s   p90 {percentile(latencies, 0.9):.2f} s   "
          f"p99 {percentile(latencies, 0.99):.2f} s   max {max(latencies):.2f} s   (target p99 < 2 s)")
    record("bench_latency", rate=rate, seconds=offered_seconds, p50_s=percentile(latencies, 0.5),
           p99_s=percentile(latencies, 0.99), max_s=max(latencies), not_queryable=missing)
    print(f"  the webhook's answer to a POST of {max(1, int(rate * TICK)):,} sessions: p50 {percentile(answer_seconds, 0.5) * 1000:.0f} ms   "
          f"p99 {percentile(answer_seconds, 0.99) * 1000:.0f} ms   max {max(answer_seconds) * 1000:.0f} ms ({len(answer_seconds):,} POSTs)")
    for group in groups:
        values = [sample.get(group, 0) for sample in lags]
        print(f"  lag of {group}, sampled every second until all was queryable ({len(values)} samples): median {statistics.median(values):,.0f}  "
              f"p99 {percentile(values, 0.99):,.0f}  max {max(values):,} records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="sessions offered per second")
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()
    with scratch_directory(prefix="omnihub-latency-") as tmp:
        settings = load_settings(None, data_dir=Path(tmp), clickhouse={"embedded_path": Path(tmp) / "chdb"})
        asyncio.run(run(settings, args.rate, args.seconds))


if __name__ == "__main__":
    main()
