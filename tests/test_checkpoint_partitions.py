"""Keyed records go to the partition Kafka's default partitioner picks (the Java client's murmur2), from the
connectors' producers and from the worker's own batching producer (streams/checkpoint.py) alike, so keyed
topics stay co-partitioned with what any other client produces."""
import asyncio
import os
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from infra.kafka import default_partitioner, ensure_topics, key_partition, key_partitions, producer_config, read_topic
from streams.checkpoint import Checkpoint
from streams.resolver import Send
from streams.state_store import StateStore


def aiokafka_choice(key: bytes, count: int) -> int:
    return DefaultPartitioner()(key, list(range(count)), list(range(count)))


def test_a_key_gets_the_partition_aiokafkas_default_partitioner_gives_it():
    keys = ([f"customer-{n}".encode() for n in range(2_000)] + [str(uuid.uuid4()).encode() for _ in range(2_000)]
            + [os.urandom(length) for length in range(64)] + [b""])   # every tail length of the hash's 4-byte steps
    for count in (1, 2, 3, 4, 6, 7, 12):
        assert [key_partition(key, list(range(count))) for key in keys] == [aiokafka_choice(key, count) for key in keys]
        assert [default_partitioner(key, list(range(count)), []) for key in keys] == \
            [aiokafka_choice(key, count) for key in keys]
        # all at once, as the worker hashes a batch's keys: keys of every length mixed, in their order
        assert key_partitions(keys, list(range(count))) == [aiokafka_choice(key, count) for key in keys]
    assert key_partitions(keys, [7, 3, 5]) == [[7, 3, 5][aiokafka_choice(key, 3)] for key in keys]   # the ids given
    assert key_partitions([], [0, 1]) == []
    assert {default_partitioner(None, [0, 1, 2], [1]) for _ in range(50)} == {1}   # keyless: an available one


@pytest.mark.integration
def test_the_worker_and_a_plain_producer_put_keyed_records_where_kafka_would(settings, kafka_bootstrap, tmp_path):
    topic = f"partitions-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, [topic], 3, 1)
    keys = [f"customer-{n}".encode() for n in range(300)]

    async def produce() -> None:
        producer = AIOKafkaProducer(**producer_config(settings, kafka_bootstrap))
        await producer.start()
        try:
            store = StateStore(tmp_path / "state")
            checkpoint = Checkpoint(store, producer, f"{topic}-changelog", "broker")
            await checkpoint.publish([Send(topic, key, b"worker") for key in keys] + [Send(topic, None, b"keyless")] * 30)
            await asyncio.gather(*[await producer.send(topic, b"plain", key=key) for key in keys])
            store.close()
        finally:
            await producer.stop()

    asyncio.run(produce())
    records = asyncio.run(read_topic(settings, kafka_bootstrap, topic))
    keyed = [(r.key, r.partition, r.value) for r in records if r.key is not None]
    assert sorted(keyed) == sorted((key, aiokafka_choice(key, 3), value) for key in keys for value in (b"worker", b"plain"))
    assert len(set(partition for _, partition, _ in keyed)) == 3
    assert sorted(r.partition for r in records if r.key is None) == [0] * 10 + [1] * 10 + [2] * 10   # spread in turn
