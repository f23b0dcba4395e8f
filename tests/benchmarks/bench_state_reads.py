"""Benchmark (not a test): reads of the worker's state, each measured against what it replaced, in one run.

    python tests/benchmarks/bench_state_reads.py [--keys 1000000] [--customers 100000]

- A RocksDB read of a key that is not there (most keys of a new event), with and without the bloom filter
  the state store now sets per file (streams/state_store.py), over --keys keys written in 20 files.
- The same while the worker writes: batches of 40,000 keys, each followed by reads of 40,000 new keys, so the
  memtable holds the last writes; the state store's options with and without the memtable's bloom filter.
- The best-customer threshold: every profile read from RocksDB (before) against the revenues kept in memory
  beside the profiles view (streams/resolver.py, ProfilesView), for --customers profiles of 8 orders.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch  # noqa: E402

from streams import profiles as profile_state  # noqa: E402
from streams.resolver import ProfilesView  # noqa: E402
from streams.state_store import StateStore, rocksdb_options  # noqa: E402

BATCH_KEYS = 40_000   # about what a batch of 10,000 events writes


def miss_micros(folder: Path, keys: int, bloom: bool) -> float:
    options = Options(raw_mode=True)
    if bloom:
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
    db = Rdict(str(folder), options)
    for _ in range(20):
        batch = WriteBatch(raw_mode=True)
        for _ in range(keys // 20):
            batch.put(b"events\x00" + uuid.uuid4().hex.encode(), b"1")
        db.write(batch)
        db.flush()
    missing = [b"events\x00" + uuid.uuid4().hex.encode() for _ in range(100_000)]
    started = time.perf_counter()
    for key in missing:
        db.get(key)
    seconds = time.perf_counter() - started
    db.close()
    return seconds / len(missing) * 1e6


def miss_while_writing_micros(folder: Path, keys: int, memtable_bloom: bool) -> float:
    db = Rdict(str(folder), rocksdb_options(memtable_bloom=memtable_bloom))
    seconds = reads = 0
    for _ in range(max(1, keys // BATCH_KEYS)):
        missing = [b"events\x00" + uuid.uuid4().hex.encode() for _ in range(BATCH_KEYS)]
        started = time.perf_counter()
        for key in missing:
            db.get(key)
        seconds += time.perf_counter() - started
        reads += len(missing)
        batch = WriteBatch(raw_mode=True)
        for key in missing:   # as resolution does: what it looked for and did not find, it then writes
            batch.put(key, b'"0f8e9a2c-5d1b-5e6f-9a7b-3c4d5e6f7a8b"')
        db.write(batch)
    db.close()
    return seconds / reads * 1e6


def threshold_seconds(folder: Path, customers: int) -> tuple[float, float]:
    store = StateStore(folder)
    view = store.views["profiles"]
    for i in range(customers):
        profile = profile_state.empty(f"c{i}")
        profile["orders"] = [[1_700_000_000_000 + k * 86_400_000, 1_000 + k] for k in range(8)]
        profile["last_seen"] = profile["orders"][-1][0]
        view[f"c{i}"] = profile
    store.apply(store.take_delta(), 1)
    store.close()
    reopened = StateStore(folder)   # a cold cache, as after the 30 s between two thresholds
    profiles = reopened.views["profiles"]
    started = time.perf_counter()
    yearly = {customer_id: profile_state.revenue_12_months(p) for customer_id, p in profiles.items() if p}
    flags = {customer_id: profiles[customer_id].get("best", False) for customer_id in yearly}
    sorted(yearly.values(), reverse=True)
    every_profile = time.perf_counter() - started
    kept = ProfilesView(profiles)
    kept.segment()   # built once, at the worker's first threshold
    started = time.perf_counter()
    segment = kept.segment()
    revenues = sorted((revenue for revenue, _ in segment.values() if revenue > 0), reverse=True)
    threshold = revenues[len(revenues) // 20]
    [customer_id for customer_id, (revenue, best) in segment.items() if (revenue >= threshold) != best]
    in_memory = time.perf_counter() - started
    assert len(flags) == len(segment) == customers
    return every_profile, in_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnihub-state-reads-") as tmp:
        without = miss_micros(Path(tmp) / "plain", args.keys, bloom=False)
        with_bloom = miss_micros(Path(tmp) / "bloom", args.keys, bloom=True)
        print(f"RocksDB read of a missing key among {args.keys:,}: {without:.2f} us without a bloom filter, "
              f"{with_bloom:.2f} us with one")
        plain_memtable = miss_while_writing_micros(Path(tmp) / "memtable-plain", args.keys, memtable_bloom=False)
        bloom_memtable = miss_while_writing_micros(Path(tmp) / "memtable-bloom", args.keys, memtable_bloom=True)
        print(f"the same while writing batches of {BATCH_KEYS:,} keys ({args.keys:,} in all): {plain_memtable:.2f} us "
              f"without a bloom filter in the memtable, {bloom_memtable:.2f} us with one")
        every_profile, in_memory = threshold_seconds(Path(tmp) / "state", args.customers)
        print(f"best-customer threshold over {args.customers:,} customers: every profile read {every_profile:.2f} s, "
              f"revenues kept in memory {in_memory * 1000:.0f} ms")


if __name__ == "__main__":
    main()
