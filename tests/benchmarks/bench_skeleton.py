"""Benchmark (not a test): the broker's raw produce and consume rates with the project's client
settings, and the end-to-end rate of file -> connector -> Faust -> sink -> ClickHouse, in one run.

    python tests/benchmarks/bench_skeleton.py [--messages 200000] [--orders 20000]

Uses the embedded broker and a fresh chDB folder unless OMNIHUB_KAFKA__BOOTSTRAP_SERVERS /
OMNIHUB_CLICKHOUSE__URL point at servers.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from connectors.config import find_config  # noqa: E402
from connectors.runtime import Connector, run_connector  # noqa: E402
from connectors.sources import SourceRecord  # noqa: E402
from infra.hub import Hub  # noqa: E402
from infra.kafka import consumer_config, ensure_topics, producer_config  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from sinks.named_queries import stored_counts  # noqa: E402
from tests.fixtures import web_order, write_web_orders  # noqa: E402
from tests.benchmarks.scratch import scratch_directory  # noqa: E402


async def raw_rates(settings, bootstrap: str, messages: int) -> tuple[float, float, int]:
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], settings.topics.partitions, settings.topics.replication_factor)
    # A realistic value: one web order as the connector encodes it.
    _, value, _ = Connector(settings, bootstrap, find_config("web-orders")).convert(SourceRecord("line 1", b"", web_order(1)))
    producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
    await producer.start()
    started = time.perf_counter()
    futures = []
    for i in range(messages):
        futures.append(await producer.send(topic, value, key=b"%d" % i))
        if len(futures) >= 10_000:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    produce_rate = messages / (time.perf_counter() - started)
    await producer.stop()

    consumer = AIOKafkaConsumer(topic, **consumer_config(settings, bootstrap, group_id=f"bench-{topic}"))
    await consumer.start()
    while not consumer.assignment():  # the group join is not part of the consume rate
        await consumer.getmany(timeout_ms=100)
    started, received = time.perf_counter(), 0
    while received < messages:
        batch = await consumer.getmany(timeout_ms=5000, max_records=10_000)
        if not batch:
            raise RuntimeError(f"consumer stalled at {received}/{messages}")
        received += sum(len(m) for m in batch.values())
    consume_rate = received / (time.perf_counter() - started)
    await consumer.stop()
    return produce_rate, consume_rate, len(value)


def timeline_count(hub: Hub) -> int:
    return stored_counts(hub.client)[0]


async def end_to_end(settings, orders: int, workdir: Path) -> tuple[float, float]:
    config = find_config("web-orders")
    async with Hub(settings) as hub:
        # Warm-up: the worker's group join and first fetches are start-up cost, not throughput.
        await run_connector(settings, hub.bootstrap, config, write_web_orders(workdir / "warmup.jsonl", 100, start=10**7))
        while timeline_count(hub) < 100:
            await asyncio.sleep(0.2)
        source = write_web_orders(workdir / "orders.jsonl", orders)
        started = time.perf_counter()
        report = await run_connector(settings, hub.bootstrap, config, source)
        connector_seconds = time.perf_counter() - started
        assert report.accepted == orders, report.summary()
        while timeline_count(hub) < orders + 100:
            await asyncio.sleep(0.1)
        total_seconds = time.perf_counter() - started
    return orders / connector_seconds, orders / total_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="records for the raw produce/consume rates")
    parser.add_argument("--orders", type=int, default=20_000, help="orders for the end-to-end rate")
    args = parser.parse_args()
    with scratch_directory(prefix="omnihub-bench-") as tmp:
        workdir = Path(tmp)
        settings = load_settings(None, data_dir=workdir, clickhouse={"embedded_path": workdir / "chdb", "query_port": 0})
        hub_for_broker = None
        if settings.embedded_kafka:
            from infra.broker import EmbeddedBroker

            hub_for_broker = EmbeddedBroker(workdir / "logs", settings.kafka.embedded_storage).start()
            settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
                update={"bootstrap_servers": hub_for_broker.bootstrap_servers})})
        try:
            produce, consume, size = asyncio.run(raw_rates(settings, settings.kafka.bootstrap_servers, args.messages))
            connector, e2e = asyncio.run(end_to_end(settings, args.orders, workdir))
        finally:
            if hub_for_broker:
                hub_for_broker.stop()
    where = "embedded tansu + chDB" if hub_for_broker else settings.kafka.bootstrap_servers
    print(f"omnihub skeleton benchmark ({where}; {settings.topics.partitions} partitions; {size}-byte records)")
    print(f"  raw produce (aiokafka, acks=all)        {produce:>10,.0f} msg/s   ({args.messages:,} records)")
    print(f"  raw consume (aiokafka, consumer group)  {consume:>10,.0f} msg/s")
    print(f"  connector: file -> channel topic        {connector:>10,.0f} orders/s ({args.orders:,} orders)")
    print(f"  end to end: file -> ClickHouse          {e2e:>10,.0f} orders/s")
    print(f"  end-to-end / raw consume                {e2e / consume:>10.3f}")


if __name__ == "__main__":
    main()
