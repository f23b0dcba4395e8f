"""Kafka client settings and topic administration, in one place for every component.

Broker quirks of the embedded tansu build are worked around here and only here (see
infra/quirks/ for their reproductions and README "Known limitations").
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
from typing import Mapping, Sequence

import murmurhash2
import numpy as np
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from infra.settings import Settings

log = logging.getLogger(__name__)


def _retry_produce_races() -> None:
    """tansu's s3:// engine (the embedded broker's disk) answers UnknownError to a produce request that
    raced another one to the same partition: both wrote the batch object at the same offset and the
    second conditional PUT lost, so its records were not stored (infra/quirks: concurrent_produce).
    Retrying is then exactly right, and the producer does it once the error is retriable."""
    from aiokafka import errors

    errors.UnknownError.retriable = True


_retry_produce_races()

KAFKA_MURMUR2_SEED = 0x9747B28C   # org.apache.kafka.common.utils.Utils.murmur2's


def key_partition(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner gives a key (the Java client's murmur2, as aiokafka's
    DefaultPartitioner computes it), so keyed topics stay co-partitioned with any other client's: murmurhash2's C
    where aiokafka's murmur2 is pure Python, 0.59 against 11.03 us a key (tests/benchmarks/bench_partitioner.py).
    Per record, for producers that send records one by one; the connectors and the worker choose their
    batches' partitions with key_partitions."""
    return partitions[(murmurhash2.murmurhash2(key, KAFKA_MURMUR2_SEED) & 0x7FFFFFFF) % len(partitions)]


_M = np.uint32(0x5BD1E995)   # murmur2's multiplier
GIL_KEPT_ROWS = 500   # numpy keeps the GIL through an operation on at most this many elements


def key_partitions(keys: Sequence[bytes], partitions: Sequence[int]) -> list[int]:
    """key_partition() of many keys at once, with numpy over the keys of each length. murmurhash2 releases the GIL
    at every call, and so does numpy on arrays of more than 500 elements: alone that costs nothing, but in the
    worker, whose resolving thread wants the GIL all the time, and in a connector beside the hub's sink, each
    release is a wait to take it back
    (tests/benchmarks/bench_partitioner.py: 0.22 us a key alone, 66 to 90 beside a busy thread). In slices of 500 keys
    numpy never lets go of it."""
    hashes = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(index)
    with np.errstate(over="ignore"):   # the hash's arithmetic is modulo 2**32, as uint32 arrays do it
        for length, indexes in by_length.items():
            for start in range(0, len(indexes), GIL_KEPT_ROWS):
                rows = indexes[start:start + GIL_KEPT_ROWS]
                hashes[rows] = _murmur2(np.frombuffer(b"".join([keys[i] for i in rows]), dtype=np.uint8)
                                        .reshape(len(rows), length))
    chosen = (hashes & np.uint32(0x7FFFFFFF)) % np.uint32(len(partitions))
    return [partitions[i] for i in chosen.tolist()]


def topic_key_partitions(records: Sequence[Sequence], partitions: Mapping[str, Sequence[int]],
                         spread_keyless: bool = False) -> list[int | None]:
    """The partition of each record a batch sends, given as (topic, key, ...): a keyed one's with key_partitions
    over each topic's keys at once; a keyless one's None (the producer's choice), or with spread_keyless its
    topic's partitions in turn (by its index). One pass over the records: the worker calls it for every batch."""
    chosen: list[int | None] = [None] * len(records)
    keyed: dict[str, list[int]] = {}   # topic -> indexes of its keyed records
    for index, record in enumerate(records):
        topic = record[0]
        if record[1] is not None:
            keyed.setdefault(topic, []).append(index)
        elif spread_keyless:
            spread = partitions[topic]
            chosen[index] = spread[index % len(spread)]
    for topic, indexes in keyed.items():
        for index, partition in zip(indexes, key_partitions([records[i][1] for i in indexes], partitions[topic])):
            chosen[index] = partition
    return chosen


def _murmur2(data: np.ndarray) -> np.ndarray:
    """Kafka's murmur2 of each row of equal-length keys (rows x bytes, uint8)."""
    count, length = data.shape
    h = np.full(count, (KAFKA_MURMUR2_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    whole = length // 4
    words = np.ascontiguousarray(data[:, :whole * 4]).view("<u4")
    for column in range(whole):   # each 4-byte little-endian word
        k = words[:, column] * _M
        k ^= k >> np.uint32(24)
        k *= _M
        h *= _M
        h ^= k
    tail = length % 4
    if tail >= 3:
        h ^= data[:, whole * 4 + 2].astype(np.uint32) << np.uint32(16)
    if tail >= 2:
        h ^= data[:, whole * 4 + 1].astype(np.uint32) << np.uint32(8)
    if tail >= 1:
        h ^= data[:, whole * 4].astype(np.uint32)
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def default_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's DefaultPartitioner with key_partition: a keyless record goes to a random available partition."""
    if key is None:
        return random.choice(available or all_partitions)
    return key_partition(key, all_partitions)


def producer_config(settings: Settings, bootstrap: str) -> dict:
    """aiokafka producer arguments: acks=all for at-least-once; idempotence off because tansu
    answers InitProducerId with UnknownError (infra/quirks/idempotent_producer.py)."""
    return dict(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        partitioner=default_partitioner,
        linger_ms=settings.kafka.producer_linger_ms,
        max_batch_size=settings.kafka.producer_max_batch_bytes,
        request_timeout_ms=settings.kafka.request_timeout_ms,
    )


def consumer_config(settings: Settings, bootstrap: str, group_id: str | None) -> dict:
    """aiokafka consumer arguments. A short session timeout because tansu holds a group join for
    half of it (infra/quirks/group_join.py); offsets are committed by the caller after its work."""
    return dict(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
        request_timeout_ms=settings.kafka.consumer_request_timeout_ms,
    )


def ensure_topics(bootstrap: str, names: list[str], partitions: int, replication_factor: int,
                  compacted: tuple[str, ...] = ()) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created.

    Explicit creation matters: tansu auto-creates unknown topics with 4 partitions, which then
    disagree with the configured count (and stop Faust with PartitionsMismatch for changelogs)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="omnihub-admin")
    try:
        existing = set(admin.list_topics())
        missing = [name for name in names if name not in existing]
        created: list[str] = []
        for name in missing:
            try:
                configs = {"cleanup.policy": "compact"} if name in compacted else {}
                admin.create_topics([NewTopic(name, partitions, replication_factor, topic_configs=configs)])
                created.append(name)
            except TopicAlreadyExistsError:  # created concurrently by another component
                pass
        if created:
            log.info("created topics %s with %d partitions", created, partitions)
        return created
    finally:
        admin.close()


BROKER_MARKER_PREFIX = "omnihub-broker-"


def forget_topics(producer, topics) -> None:
    """Stop asking the broker about these topics (about to be deleted): an aiokafka client asks for the metadata
    of every topic it ever sent to, and logs an error at each refresh for one that no longer exists."""
    client = producer.client
    client.set_topics(set(client._topics) - set(topics))   # _topics: the set set_topics replaces; none is public


def delete_topics(bootstrap: str, names: list[str]) -> list[str]:
    """Delete these topics where they exist; returns the ones deleted."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="omnihub-admin")
    try:
        existing = [name for name in names if name in set(admin.list_topics())]
        if existing:
            admin.delete_topics(existing)
        return existing
    finally:
        admin.close()


def broker_id(bootstrap: str) -> str:
    """What names the data a broker holds: the suffix of a marker topic created the first time anyone
    asks. Positions kept outside Kafka (connector files, webhook ids) record it, so a component that
    meets a broker which lost its data (memory storage restarted, another cluster) can tell, instead of
    resuming after records that are not there. Concurrent first calls may each create a marker: the
    smallest name wins, for everyone."""
    import uuid

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="omnihub-admin")
    try:
        markers = sorted(name for name in admin.list_topics() if name.startswith(BROKER_MARKER_PREFIX))
        if not markers:
            try:
                admin.create_topics([NewTopic(BROKER_MARKER_PREFIX + uuid.uuid4().hex, 1, 1)])
            except TopicAlreadyExistsError:
                pass
            markers = sorted(name for name in admin.list_topics() if name.startswith(BROKER_MARKER_PREFIX))
        return markers[0][len(BROKER_MARKER_PREFIX):]
    finally:
        admin.close()


def matching_topics(bootstrap: str, pattern: str) -> list[str]:
    """Existing topics whose name matches the regex, sorted."""
    import re

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="omnihub-admin")
    try:
        return sorted(name for name in admin.list_topics() if re.search(pattern, name))
    finally:
        admin.close()


def matching_partitions(bootstrap: str, pattern: str) -> list[tuple[str, int]]:
    """(topic, partition) of every existing topic whose name matches the regex."""
    import re

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="omnihub-admin")
    try:
        names = sorted(name for name in admin.list_topics() if re.search(pattern, name))
        if not names:
            return []
        return sorted((topic["name"], partition["partition_index"]) for topic in admin.describe_topics(names)
                      for partition in topic["partitions"])
    finally:
        admin.close()


async def read_topic(settings: Settings, bootstrap: str, topic: str, idle_seconds: float = 2.0,
                     timeout: float = 120.0) -> list:
    """Every record of a topic, from the beginning, without a consumer group: up to the end offsets as
    fetch responses report them (tansu's ListOffsets answer can be too low, infra/quirks/end_offsets.py),
    then until no record arrives for idle_seconds. A slow first fetch never ends the read early: it
    raises after timeout seconds short of the end instead."""
    import time as _time

    from aiokafka import AIOKafkaConsumer, TopicPartition as AioPartition

    consumer = AIOKafkaConsumer(**consumer_config(settings, bootstrap, group_id=None))
    await consumer.start()
    records = []
    try:
        found = await asyncio.to_thread(matching_partitions, bootstrap, f"^{re.escape(topic)}$")
        partitions = [AioPartition(t, p) for t, p in sorted(found)]
        if not partitions:
            return records
        ends = await fetched_end_offsets(bootstrap, await consumer.end_offsets(partitions))
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = _time.monotonic() + timeout
        while True:
            short = [tp for tp in partitions if await consumer.position(tp) < ends[tp]]
            batch = await consumer.getmany(timeout_ms=int(idle_seconds * 1000))
            for messages in batch.values():
                records.extend(messages)
            if not batch and not short:
                return records
            if not batch and _time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: read {len(records)} records, short of the end after {timeout} s")
    finally:
        await consumer.stop()


async def fetched_end_offsets(bootstrap: str, reported: dict, timeout: float = 10.0) -> dict:
    """End offsets taken from fetch responses' high watermark, which tansu reports correctly while its
    ListOffsets answer (what end_offsets() returns) can be too low (infra/quirks/end_offsets.py).

    reported maps TopicPartition -> the end offset ListOffsets gave; it is only ever too low, so the
    fetch starts one record before it. A partition reported empty is empty."""
    import time as _time

    from aiokafka import AIOKafkaConsumer

    partitions = [tp for tp, end in reported.items() if end]
    if not partitions:
        return dict(reported)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    ends: dict = {}
    try:
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, reported[tp] - 1)
        deadline = _time.monotonic() + timeout
        while len(ends) < len(partitions) and _time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200, max_records=1)
            for tp in partitions:
                if tp not in ends and consumer.highwater(tp) is not None:
                    ends[tp] = consumer.highwater(tp)
    finally:
        await consumer.stop()
    missing = [tp for tp in partitions if tp not in ends]
    if missing:
        raise RuntimeError(f"no fetch answered for {missing} within {timeout} s: cannot know where they end")
    return {tp: max(end, ends.get(tp, end)) for tp, end in reported.items()}


async def consumer_lag(bootstrap: str, groups: list[str]) -> list[tuple[str, str, int, int]]:
    """(group, topic, committed, end) per group and topic, summed over partitions: how far each
    consumer is behind. End offsets come from fetch responses (tansu's ListOffsets may be too low)."""
    from aiokafka import AIOKafkaConsumer

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="omnihub-status")
    try:
        # kafka-python 3 renamed list_consumer_group_offsets; one group per call suits every broker.
        committed = {group: admin.list_group_offsets(group)[group] for group in groups}
    finally:
        admin.close()
    partitions = {tp for offsets in committed.values() for tp in offsets}
    if not partitions:
        return []
    from aiokafka import TopicPartition as AioPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        reported = await consumer.end_offsets([AioPartition(tp.topic, tp.partition) for tp in partitions])
    finally:
        await consumer.stop()
    ends = await fetched_end_offsets(bootstrap, reported)
    rows: dict[tuple[str, str], list[int]] = {}
    for group, offsets in committed.items():
        for tp, meta in offsets.items():
            row = rows.setdefault((group, tp.topic), [0, 0])
            row[0] += max(meta.offset, 0)
            row[1] += ends.get(AioPartition(tp.topic, tp.partition), 0)
    return [(group, topic, c, e) for (group, topic), (c, e) in sorted(rows.items())]
