"""Writes a compaction's snapshot of the resolution state to the changelog's new generation, in a process of
its own (streams/app.py compact_changelog starts it):

    python -m streams.snapshot_writer FROZEN TOPIC BATCH_ID --part-bytes N --kafka JSON --streams JSON

FROZEN is the state frozen by StateStore.freeze (a RocksDB checkpoint on disk), deleted once read. Prints one
JSON line, {"records": n, "bytes": b}, once every record is acknowledged; on failure, one line naming the cause
on stderr and exit status 1.

Why a process: in the worker's own process, the snapshot's Python loops (every key of the state, read twice)
took the interpreter from the resolution. At 2,000 events/s (bench_recovery.py), the events sent while
compacting 100,000 identifiers waited p99 3.0 s that way, 0.63 s with this process. Here it runs at a lower
CPU priority, and the resolution keeps its interpreter.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Iterator

from aiokafka import AIOKafkaProducer

SNAPSHOT_IN_FLIGHT = 8   # records (up to MAX_DELTA_BYTES each) awaiting the broker
NICENESS = 10            # below the worker, the hub and the connectors: the snapshot can wait, events should not


async def write_paced(producer: AIOKafkaProducer, topic: str, records: Iterator[bytes],
                      bytes_per_second: float) -> tuple[int, int]:
    """Records to a one-partition topic, in order, all acknowledged: (records, bytes). At most
    SNAPSHOT_IN_FLIGHT wait for the broker, so the snapshot is never held whole, and no more than
    bytes_per_second go."""
    acks: deque = deque()
    count = size = 0
    started = time.monotonic()
    for record in records:
        acks.append(await producer.send(topic, record, partition=0))
        count, size = count + 1, size + len(record)
        if len(acks) >= SNAPSHOT_IN_FLIGHT:
            await acks.popleft()
        await asyncio.sleep(max(0.0, started + size / bytes_per_second - time.monotonic()))
    await asyncio.gather(*acks)
    return count, size


async def write_snapshot(frozen: Path, topic: str, batch_id: str, kafka: dict, streams: dict) -> dict:
    from infra.kafka import producer_config
    from infra.settings import load_settings
    from streams.state_store import StateStore

    settings = load_settings(None, kafka=kafka, streams=streams)
    producer = AIOKafkaProducer(**producer_config(settings, settings.kafka.bootstrap_servers))
    await producer.start()
    try:
        count, size = await write_paced(producer, topic, StateStore.read_frozen(frozen, batch_id),
                                        settings.streams.changelog_snapshot_mb_per_second * 1e6)
    finally:
        await producer.stop()
    return {"records": count, "bytes": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frozen", type=Path)
    parser.add_argument("topic")
    parser.add_argument("batch_id")
    parser.add_argument("--part-bytes", type=int, required=True, help="a record's size before compression, at most")
    parser.add_argument("--kafka", required=True, help="the worker's kafka settings, as JSON")
    parser.add_argument("--streams", required=True, help="the worker's streams settings, as JSON")
    args = parser.parse_args(argv)
    os.nice(NICENESS)
    from streams import state_store

    state_store.MAX_DELTA_BYTES = args.part_bytes   # the worker's, so its records are framed alike
    try:
        result = asyncio.run(write_snapshot(args.frozen, args.topic, args.batch_id, json.loads(args.kafka),
                                            json.loads(args.streams)))
    except Exception as error:
        print(f"writing the snapshot to {args.topic} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
