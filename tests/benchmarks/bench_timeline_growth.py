"""Benchmark (not a test): what inserting a batch of timeline events costs ClickHouse as timeline_events grows.

    python tests/benchmarks/bench_timeline_growth.py [--events 100000] [--customers 10000] [--rounds 10]
                                                     [--batch-rows N] [--without-exactness]

Resolves a generated scenario as the worker does (bench_sink.py), turns its timeline records into rows as the
sink does (ClickHouseSink._batch), then inserts those rows --rounds times over under new event ids, in batches
of sink.batch_max_rows (or --batch-rows), into embedded chDB with the migrations' tables and materialized views. Prints the CPU
an event of each round (the process's: chDB's threads included) beside the table's size, then what the
exactness check of timeline_facts costs and reads for one more batch: it looks the batch's hours and event ids up
in timeline_facts (a batch whose events span every hour the table holds, a bulk load, reads every granule),
beside the (hour, event_id) pairs as migration 0013 looked them up; each three times, alternated, the median.
--without-exactness drops timeline_facts_from_timeline first (and so every view fed from timeline_facts), to
compare: chDB opens one data folder per process, so each variant is its own run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra import vault as vault_module  # noqa: E402
from infra.clickhouse import LockedClient, open_client  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from sinks.clickhouse_sink import TIMELINE_COLUMNS, ClickHouseSink  # noqa: E402
from sinks.migrate import migrate  # noqa: E402
from tests.benchmarks.bench_sink import worker_records  # noqa: E402
from tests.benchmarks.scratch import scratch_directory  # noqa: E402

EXACTNESS_VIEW = "timeline_facts_from_timeline"
# The view's lookup (sinks/sql/0015_facts_lookup_by_hour_and_id.sql), and the pairs as 0013 looked them up, to compare.
LOOKUPS = {
    "hour and id apart (the view's)": "SELECT count() FROM timeline_facts WHERE toStartOfHour(event_time) IN "
                                      "(SELECT toStartOfHour(event_time) FROM {block}) AND event_id IN "
                                      "(SELECT event_id FROM {block})",
    "(hour, id) pairs (0013's)": "SELECT count() FROM timeline_facts WHERE (toStartOfHour(event_time), event_id) IN "
                                 "(SELECT toStartOfHour(event_time), event_id FROM {block})",
}
# ClickHouse remembers which granules a filter ruled out; the view's lookups are never repeated, so neither are these.
NO_CACHE = " SETTINGS use_query_condition_cache = 0"


def exactness_lookup(client, sink: ClickHouseSink, batch: list[list]) -> tuple[str, list[str]]:
    """The exactness check's lookup for one more batch, run alone, each way: median CPU, and granules read."""
    client.command("CREATE TABLE growth_probe_block AS timeline_events ENGINE = Memory")
    sink._insert_rows("growth_probe_block", batch, TIMELINE_COLUMNS)
    hours = client.query("SELECT uniqExact(toStartOfHour(event_time)) FROM growth_probe_block").result_rows[0][0]
    queries = {name: lookup.format(block="growth_probe_block") for name, lookup in LOOKUPS.items()}
    spent: dict[str, list[float]] = {name: [] for name in queries}
    for _ in range(3):
        for name, query in queries.items():
            began = time.process_time()
            client.query(query + NO_CACHE)
            spent[name].append(time.process_time() - began)
    lines = []
    for name, query in queries.items():
        cpu = statistics.median(spent[name])
        plan = [row[0].strip() for row in client.query("EXPLAIN indexes = 1 " + query).result_rows]
        granules = [line for line in plan if line.startswith("Granules:")]
        lines.append(f"{name}: {cpu:.3f} s of CPU ({cpu / len(batch) * 1e6:.1f} us an event), "
                     f"timeline_facts {granules[-1] if granules else '?'}")
    return f"for {len(batch):,} events spanning {hours} hours", lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch-rows", type=int, default=None,
                        help="events a batch (default sink.batch_max_rows; bench_end_to_end's sink made about 15,000 "
                             "records a batch at 1M)")
    parser.add_argument("--without-exactness", action="store_true",
                        help=f"drop {EXACTNESS_VIEW} (and what timeline_facts feeds) before inserting")
    args = parser.parse_args()
    with scratch_directory("omnihub-bench-growth-") as tmp:
        folder = Path(tmp)
        settings = load_settings(None, data_dir=folder / "hub", clickhouse={"embedded_path": folder / "chdb"},
                                 **({"sink": {"batch_max_rows": args.batch_rows}} if args.batch_rows else {}))
        _, records = worker_records(settings, folder, args.customers, args.events)
        vault_module._open.clear()   # the sink's own vault, as in the hub's process
        client = LockedClient(open_client(settings))
        migrate(client)
        if args.without_exactness:
            client.command(f"DROP TABLE {EXACTNESS_VIEW}")
        sink = ClickHouseSink(settings, "", client)
        rows_a_batch = settings.sink.batch_max_rows
        timeline = [record for record in records if record.topic == settings.topics.customer_timeline]
        rows = [row for start in range(0, len(timeline), rows_a_batch)
                for row in sink._batch(timeline[start:start + rows_a_batch]).timeline.rows]
        print(f"timeline inserts as the table grows: {len(rows):,} events of {args.customers:,} people inserted "
              f"{args.rounds} times under new ids, batches of {rows_a_batch:,}, "
              f"{'without' if args.without_exactness else 'with'} the exactness chain (timeline_facts)", flush=True)
        for round_number in range(args.rounds):
            began = time.process_time()
            for start in range(0, len(rows), rows_a_batch):
                sink._insert_rows("timeline_events", [[f"{row[0]}-{round_number}", *row[1:]]
                                                      for row in rows[start:start + rows_a_batch]], TIMELINE_COLUMNS)
            spent = time.process_time() - began
            print(f"  table {(round_number + 1) * len(rows):>10,} events: {spent / len(rows) * 1e6:6.1f} us of CPU an "
                  f"event inserted", flush=True)
        if not args.without_exactness:
            batch = [[f"{row[0]}-probe", *row[1:]] for row in rows[:rows_a_batch]]
            block, ways = exactness_lookup(client, sink, batch)
            print(f"  the exactness check's lookup for one more batch, {block}:")
            for way in ways:
                print(f"    {way}")


if __name__ == "__main__":
    main()
