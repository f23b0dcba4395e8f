"""Benchmark (not a test): the cost of choosing a keyed record's partition, on the same keys in one run:
aiokafka's default partitioner (its pure-Python murmur2), infra.kafka.key_partition (the same hash in C,
murmurhash2, a call a key: the producers' partitioner) and infra.kafka.key_partitions (numpy over a batch of
keys: the worker's batches and the connectors'). Each alone, then beside a thread that wants the GIL all the
time, as the worker's resolving thread does while its event loop publishes: murmurhash2 releases the GIL at
every call and must then wait to take it back.

    python tests/benchmarks/bench_partitioner.py [--keys 100000] [--batch 16000]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka.partitioner import DefaultPartitioner  # noqa: E402

from infra.kafka import default_partitioner, key_partitions  # noqa: E402


class BusyThread:
    """A thread running Python for as long as it lives: it wants the GIL all the time."""

    def __enter__(self):
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        return self

    def _spin(self) -> None:
        count = 0
        while self.running:
            count += 1

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()


def timed(choose, keys: list[bytes]) -> tuple[float, float, list[int]]:
    """(wall us a key, this thread's CPU us a key, the partitions chosen)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    chosen = choose(keys)
    return (time.perf_counter() - wall) / len(keys) * 1e6, (time.thread_time() - cpu) / len(keys) * 1e6, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=16_000, help="keys hashed at once (about one worker batch's records)")
    args = parser.parse_args()
    keys = [str(uuid.uuid4()).encode() for _ in range(args.keys)]   # customer ids, as the worker keys its records
    partitions = list(range(6))
    aiokafka = DefaultPartitioner()
    ways = {
        "aiokafka DefaultPartitioner": lambda ks: [aiokafka(key, partitions, partitions) for key in ks],
        "key_partition (murmurhash2)": lambda ks: [default_partitioner(key, partitions, partitions) for key in ks],
        "key_partitions (numpy, batches)": lambda ks: [p for start in range(0, len(ks), args.batch)
                                                       for p in key_partitions(ks[start:start + args.batch], partitions)],
    }
    expected = None
    for setting in ("alone", "beside a busy thread"):
        print(f"  {setting}:")
        for name, choose in ways.items():
            sample = keys[:5_000] if setting != "alone" and "murmurhash2" in name else keys  # slow there: fewer
            with BusyThread() if setting != "alone" else contextlib.nullcontext():
                wall, cpu, chosen = timed(choose, sample)
            expected = expected or chosen
            assert chosen == expected[:len(chosen)], f"{name} chose other partitions"
            print(f"    {name:34s} {wall:8.2f} us a key of wall time, {cpu:6.2f} us of this thread's CPU "
                  f"({len(sample):,} keys, 6 partitions)")
    print("  the same partition for every key, every way")


if __name__ == "__main__":
    main()
