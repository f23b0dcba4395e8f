"""Benchmark (not a test): the hub's sink per event, without Kafka: decoding the worker's records into rows, and
inserting them into ClickHouse (embedded chDB, the migrations' tables and materialized views).

    python tests/benchmarks/bench_sink.py [--events 200000] [--customers 20000]

Maps a generated scenario with the bundled connectors and resolves it as the worker does (bench_resolver.py),
then hands the worker's records on the topics the sink reads (timeline, profiles, merges) to ClickHouseSink in
batches of sink.batch_max_rows (or --batch-rows), as the hub's consumer would: ClickHouseSink._batch (Avro decode, opening what was
sealed, rows) and ClickHouseSink._insert (clickhouse-connect and chDB, materialized views included). The
sink opens its own vault, with no key cached, as the hub's process does. Prints CPU microseconds an event
for each step (the process's CPU: chDB's threads are counted in the insert while it runs).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka.structs import ConsumerRecord  # noqa: E402

from infra import vault as vault_module  # noqa: E402
from infra.clickhouse import LockedClient, open_client  # noqa: E402
from infra.processes import tune_collector  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from sinks.clickhouse_sink import ClickHouseSink  # noqa: E402
from streams.resolver import Send  # noqa: E402
from sinks.migrate import migrate  # noqa: E402
from tests.benchmarks.bench_resolver import channel_records, run_worker_code  # noqa: E402
from tests.benchmarks.scratch import scratch_directory  # noqa: E402


def worker_records(settings, folder: Path, customers: int, events: int) -> tuple[int, list[ConsumerRecord]]:
    """(channel events, the records the worker publishes for them that the sink reads), resolved as the worker
    does."""
    records = channel_records(settings, folder / "scenario", customers, events)
    published: list[Send] = []
    run_worker_code(settings, folder / "state", records, published=published)
    topics = settings.topics
    read = {topics.customer_timeline, topics.customer_profiles, topics.identity_merges, topics.dead_letters,
            topics.campaigns, topics.customer_erasures}   # as ClickHouseSink.run subscribes
    now = int(time.time() * 1000)
    return len(records), [ConsumerRecord(topic, 0, offset, timestamp or now, 0, key, value, None, len(key or b""),
                                         len(value or b""), ())
                          for offset, (topic, key, value, timestamp) in enumerate(published) if topic in read]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--batch-rows", type=int, default=None,
                        help="records a batch (default sink.batch_max_rows); a sink that keeps up makes smaller ones")
    args = parser.parse_args()
    with scratch_directory("omnihub-bench-sink-") as tmp:
        folder = Path(tmp)
        settings = load_settings(None, data_dir=folder / "hub", clickhouse={"embedded_path": folder / "chdb"},
                                 **({"sink": {"batch_max_rows": args.batch_rows}} if args.batch_rows else {}))
        events, records = worker_records(settings, folder, args.customers, args.events)
        vault_module._open.clear()   # the sink's own vault, no key cached: the hub is another process
        client = LockedClient(open_client(settings))
        migrate(client)
        sink = ClickHouseSink(settings, "", client)
        rows = settings.sink.batch_max_rows
        print(f"sink per event without Kafka: {events:,} channel events of {args.customers:,} people, {len(records):,} "
              f"records from the worker, batches of {rows:,}", flush=True)
        gc.collect()
        tune_collector()   # as the hub runs
        decoding = inserting = 0.0
        for start in range(0, len(records), rows):
            began = time.process_time()
            batch = sink._batch(records[start:start + rows])
            decoded = time.process_time()
            sink._insert(batch)
            decoding += decoded - began
            inserting += time.process_time() - decoded
        print(f"decode and rows (ClickHouseSink._batch) {decoding / events * 1e6:.1f} us an event, insert "
              f"(ClickHouseSink._insert, chDB included) {inserting / events * 1e6:.1f} us: "
              f"{(decoding + inserting) / events * 1e6:.1f} us of CPU an event, {events / (decoding + inserting):,.0f} "
              f"events/s on one core")


if __name__ == "__main__":
    main()
