"""Benchmark (not a test): generate the promotion scenario, then load it through the five connectors
and check that every count reconciles, in one run.

    python tests/benchmarks/bench_scenario.py [--events 1000000] [--customers 100000]

Prints the generator's time, each connector's rate, and the counts read back from Kafka. Exits with
status 1 if a count does not reconcile: read = accepted + rejected per connector, accepted = the
generator's valid records, rejected = its malformed ones, and each channel topic holds each
accepted event exactly once. Uses the embedded broker unless OMNIHUB_KAFKA__BOOTSTRAP_SERVERS is set.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka import AIOKafkaConsumer  # noqa: E402

from connectors.config import bundled_configs  # noqa: E402
from connectors.runtime import ID_HEADER, Connector  # noqa: E402
from connectors.scenario import generate  # noqa: E402
from infra.kafka import consumer_config  # noqa: E402
from infra.settings import load_settings  # noqa: E402


async def count_topic(settings, bootstrap: str, topic: str, idle_seconds: float = 3.0) -> tuple[int, int]:
    """(records, distinct id headers) of a topic, read to idle (tansu's end offsets cannot be trusted)."""
    consumer = AIOKafkaConsumer(topic, **consumer_config(settings, bootstrap, group_id=None))
    await consumer.start()
    records, ids = 0, set()
    try:
        while batch := await consumer.getmany(timeout_ms=int(idle_seconds * 1000), max_records=50_000):
            for messages in batch.values():
                records += len(messages)
                ids.update(dict(m.headers).get(ID_HEADER) for m in messages)
    finally:
        await consumer.stop()
    return records, len(ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="omnihub-bench-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        manifest = generate(workdir / "scenario", args.customers, args.events, args.seed)
        generate_seconds = time.perf_counter() - started
        records_written = sum(c["records"] for c in manifest["channels"].values())
        print(f"generate: {args.events:,} events ({records_written:,} records) of {args.customers:,} customers "
              f"in {generate_seconds:.1f} s ({records_written / generate_seconds:,.0f} records/s)", flush=True)

        settings = load_settings(None, data_dir=workdir)
        broker = None
        if settings.embedded_kafka:
            from infra.broker import EmbeddedBroker

            broker = EmbeddedBroker(workdir / "logs", settings.kafka.embedded_storage).start()
            settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
                update={"bootstrap_servers": broker.bootstrap_servers})})
        bootstrap = settings.kafka.bootstrap_servers
        try:
            rows, total_rejected, load_started = [], 0, time.perf_counter()
            for config in bundled_configs():
                connector = Connector(settings, bootstrap, config)
                expected = manifest["channels"][connector.config.name]
                source = workdir / "scenario" / expected["file"]
                began = time.perf_counter()
                report = asyncio.run(connector.run_file(source))
                seconds = time.perf_counter() - began
                on_topic, distinct = asyncio.run(count_topic(settings, bootstrap, connector.topic))
                total_rejected += report.rejected
                rows.append((connector.config.name, report.read, report.accepted, report.rejected, on_topic, distinct,
                             report.read / seconds))
                if not report.reconciles:
                    problems.append(report.summary())
                if (report.read, report.accepted, report.rejected) != (expected["records"], expected["valid"], expected["malformed"]):
                    problems.append(f"{connector.config.name}: read/accepted/rejected {report.read}/{report.accepted}/"
                                    f"{report.rejected}, generator wrote {expected}")
                if not on_topic == distinct == report.accepted:
                    problems.append(f"{connector.config.name}: {on_topic} records ({distinct} distinct) on Kafka "
                                    f"for {report.accepted} accepted")
                print(f"  {connector.config.name:<16} read {report.read:>9,} = accepted {report.accepted:>9,} + rejected "
                      f"{report.rejected:>6,}; on Kafka {on_topic:>9,} ({distinct:,} distinct); {report.read / seconds:>8,.0f} records/s",
                      flush=True)
            load_seconds = time.perf_counter() - load_started
            letters, _ = asyncio.run(count_topic(settings, bootstrap, settings.topics.dead_letters))
            if letters != total_rejected:
                problems.append(f"{letters} dead letters on Kafka for {total_rejected} rejected")
        finally:
            if broker:
                broker.stop()
    read = sum(r[1] for r in rows)
    where = "embedded tansu" if broker else bootstrap
    print(f"connectors ({where}, {settings.topics.partitions} partitions): {read:,} records in {load_seconds:.1f} s "
          f"including read-backs; dead letters on Kafka {letters:,} = rejected {total_rejected:,}")
    print("counts reconcile" if not problems else "COUNTS DO NOT RECONCILE:\n  " + "\n  ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
