"""Checkpoint: how one resolved batch becomes durable, in this order.

1. state: the batch's state delta goes to the changelog topic, acknowledged by the broker; it then goes
   into RocksDB with the changelog offset, in one atomic write (streams/state_store.py), when the state's
   owner next holds it (apply_acknowledged): a restart replays whatever the changelog holds past the offset
   RocksDB has, so the changelog's acknowledgement is what makes the state durable;
2. outputs: the batch's records, grouped per topic partition into a few produce requests, all
   acknowledged;
3. offsets: the input offsets are committed (a callback from the caller: the consumer that read it).

Batches are pipelined: while one batch waits for its acknowledgements the worker resolves the next (the
broker's round trips cost as much as the resolution here). Each step still happens in batch order: a
batch's state is applied, its outputs published and its offsets committed only after the previous
batch's, so the order above holds across batches too, and no more than MAX_IN_FLIGHT batches wait.

A worker killed between any two steps restarts from state that matches its committed offsets or is ahead
of them; the events it then reads again are known to the state and re-published as first published, so
every copy of an event is the same record. Publishing outputs before the state delta would let a killed
worker resolve the redelivered events afresh, under other ids (483 events in a probe); state first, none.

OMNIHUB_CRASH_AFTER=state|outputs makes the process exit at once after that step (exit status 137, as
after kill -9): the fault-injection hook the kill tests use to stop the worker between steps (and
snapshot|switch within a compaction of the changelog, streams/app.py).
"""
from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections import deque
from typing import Awaitable, Callable

from aiokafka import AIOKafkaProducer

from infra.kafka import topic_key_partitions
from streams.resolver import Send
from streams.state_store import StateStore

log = logging.getLogger(__name__)

CRASH_AFTER = os.environ.get("OMNIHUB_CRASH_AFTER", "")


MAX_IN_FLIGHT = 4


async def send_in_order(producer: AIOKafkaProducer, topic: str, records: list[bytes]) -> int:
    """Keyless records to a one-partition topic (a changelog), in order, all acknowledged; the last one's offset."""
    acks = await asyncio.gather(*[await producer.send(topic, record, partition=0) for record in records])
    return acks[-1].offset


class Checkpoint:
    def __init__(self, store: StateStore, producer: AIOKafkaProducer, changelog: str, broker: str):
        self.store, self.producer, self.changelog, self.broker = store, producer, changelog, broker
        self.run_id = uuid.uuid4().hex[:12]
        self.batches = 0
        self._partitions: dict[str, list[int]] = {}
        self._in_flight: list[asyncio.Task] = []
        self._queued: asyncio.Future | None = None   # set once the last batch's changelog records are queued
        self._acknowledged: deque = deque()   # (delta, changelog offset, its bytes), in order, not yet in RocksDB
        self.tee: list[bytes] | None = None   # while a compaction's snapshot is written: the changelog records since

    async def write(self, sends: list[Send]) -> None:
        """Steps 1 and 2 for the state's pending changes and these records; returns once both are
        acknowledged. Raises if the broker does not acknowledge."""
        await (await self.submit(sends))

    async def submit(self, sends: list[Send],
                     commit: Callable[[], Awaitable[None]] | None = None) -> asyncio.Task:
        """Start making the pending changes and these records durable, then commit; returns the task doing
        it, waiting first while MAX_IN_FLIGHT batches are under way. A failed batch fails every later one
        (and the next submit raises its error)."""
        self.check()
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            await self._in_flight.pop(0)
        self.apply_acknowledged()
        delta = self.store.take_delta()
        records: list[bytes] = []
        if delta:
            self.batches += 1
            records = delta.records(f"{self.run_id}-{self.batches}")
            if self.tee is not None:
                self.tee.extend(records)
        previous = self._in_flight[-1] if self._in_flight else None
        queued = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._complete(previous, self._queued, queued, delta, records, sends, commit))
        self._queued = queued
        self._in_flight.append(task)
        return task

    async def _complete(self, previous, queued_before, queued, delta, records, sends, commit) -> None:
        # The changelog holds the deltas in the order they were taken: this batch's records are queued once
        # the previous batch's are (a large delta waits for produce requests: not on the resolution's time).
        try:
            if queued_before is not None:
                await queued_before
            requests = await self._queue([Send(self.changelog, None, record) for record in records])
        except BaseException as error:  # later batches must not reach the changelog without this one
            queued.set_exception(error if isinstance(error, Exception) else RuntimeError("stopped"))
            raise
        queued.set_result(None)
        acks = await asyncio.gather(*[future for future, _ in requests])
        if previous is not None:
            await previous
        if delta:  # the offset of the delta's last record: its request's base offset + its records - 1
            self._acknowledged.append((delta, acks[-1].offset + requests[-1][1] - 1, sum(map(len, records))))
        self.crash_point("state")
        await self.publish(sends)
        self.crash_point("outputs")
        if commit is not None:
            await commit()

    def apply_acknowledged(self) -> None:
        """Write the deltas the changelog acknowledged into RocksDB, in order. Only by the state's owner (the
        caller holds the worker's lock): the views must not change under a resolution."""
        while self._acknowledged:
            delta, offset, size = self._acknowledged.popleft()
            self.store.apply(delta, offset, self.broker, written=size)

    def check(self) -> None:
        """Forget the batches that completed; raise the error of one that failed."""
        while self._in_flight and self._in_flight[0].done():
            self._in_flight.pop(0).result()

    async def drain(self) -> None:
        """Wait for every batch submitted so far."""
        while self._in_flight:
            await self._in_flight.pop(0)

    async def publish(self, sends: list[Send]) -> None:
        """Every record, in order within each partition, all acknowledged."""
        await asyncio.gather(*[future for future, _ in await self._queue(sends)])

    async def _queue(self, sends: list[Send]) -> list[tuple[asyncio.Future, int]]:
        """Queue every record, in order within each partition, in as few produce requests as fit, each sent at
        once (aiokafka's per-record send costs more than resolving the record, and waits linger_ms for more).
        Returns (future of the request's base offset, records in it) per request."""
        batches: dict[tuple[str, int], list] = {}   # (topic, partition) -> [batch, records in it]
        futures = []
        chosen = await self._choose_partitions(sends)
        for index, (topic, key, value, timestamp_ms) in enumerate(sends):
            partition = chosen[index]
            entry = batches.get((topic, partition))
            if entry is None:
                entry = batches[(topic, partition)] = [self.producer.create_batch(), 0]
            if entry[0].append(key=key, value=value, timestamp=timestamp_ms) is None:  # full: send it, start another
                entry[0].close()
                futures.append((await self.producer.send_batch(entry[0], topic, partition=partition), entry[1]))
                entry[:] = [self.producer.create_batch(), 0]
                entry[0].append(key=key, value=value, timestamp=timestamp_ms)
            entry[1] += 1
        for (topic, partition), (batch, count) in batches.items():
            batch.close()
            futures.append((await self.producer.send_batch(batch, topic, partition=partition), count))
        return futures

    async def _choose_partitions(self, sends: list[Send]) -> list[int]:
        """Each record's partition: a key's is the default partitioner's (Kafka's murmur2), as a plain send would
        choose it, hashed for all the keys of a topic at once (infra.kafka.topic_key_partitions); keyless records in turn."""
        for topic in {send.topic for send in sends} - self._partitions.keys():   # once per topic
            self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        return topic_key_partitions(sends, self._partitions, spread_keyless=True)

    @staticmethod
    def crash_point(step: str) -> None:
        if CRASH_AFTER == step:
            log.error("OMNIHUB_CRASH_AFTER=%s: exiting now, as a kill -9 would", step)
            logging.shutdown()
            os._exit(137)
