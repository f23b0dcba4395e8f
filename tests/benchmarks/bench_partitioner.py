"""Benchmark (not a test): the cost of choosing a keyed record's partition, aiokafka's default partitioner (its
pure-Python murmur2) against infra.kafka.key_partition (the same hash in C, murmurhash2), on the same keys in
one run. Every connector record is sent keyed, and every new customer id the worker publishes is hashed once.

    python tests/benchmarks/bench_partitioner.py [--keys 100000]
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka.partitioner import DefaultPartitioner  # noqa: E402

from infra.kafka import default_partitioner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    keys = [str(uuid.uuid4()).encode() for _ in range(args.keys)]   # customer ids, as the worker keys its records
    partitions = list(range(6))
    timings = {}
    for name, choose in (("aiokafka DefaultPartitioner", DefaultPartitioner()), ("infra.kafka.default_partitioner", default_partitioner)):
        started = time.perf_counter()
        chosen = [choose(key, partitions, partitions) for key in keys]
        timings[name] = (time.perf_counter() - started) / len(keys) * 1e6, chosen
    (slow, slow_chosen), (fast, fast_chosen) = timings.values()
    assert slow_chosen == fast_chosen, "the two partitioners disagree"
    for name, (micros, _) in timings.items():
        print(f"  {name:32s} {micros:6.2f} us a key ({len(keys):,} keys, 6 partitions)")
    print(f"  same partitions for every key; {slow / fast:.0f} times faster")


if __name__ == "__main__":
    main()
