"""The no-op stage of the end-to-end benchmark's same-shape pipeline: a process that copies every channel
record to one topic in batches (aiokafka, per-partition send_batch, commits after the acks), as the
resolution worker does, with no resolution.

    python -m tests.benchmarks.passthrough BOOTSTRAP CHANNEL_PATTERN OUT_TOPIC GROUP
"""
from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.kafka import matching_partitions


async def copy(bootstrap: str, pattern: str, out_topic: str, group: str) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1_048_576)
    await consumer.start()
    await producer.start()
    consumer.assign([TopicPartition(t, p) for t, p in matching_partitions(bootstrap, pattern)])
    out_partitions = sorted(await producer.partitions_for(out_topic))
    while True:
        batch = await consumer.getmany(timeout_ms=50, max_records=5000)
        futures = []
        for tp, messages in batch.items():
            partition = out_partitions[tp.partition % len(out_partitions)]
            request = producer.create_batch()
            for message in messages:
                if request.append(key=message.key, value=message.value, timestamp=None) is None:
                    request.close()
                    futures.append(await producer.send_batch(request, out_topic, partition=partition))
                    request = producer.create_batch()
                    request.append(key=message.key, value=message.value, timestamp=None)
            request.close()
            futures.append(await producer.send_batch(request, out_topic, partition=partition))
        await asyncio.gather(*futures)
        if batch:
            await consumer.commit({tp: messages[-1].offset + 1 for tp, messages in batch.items()})


if __name__ == "__main__":
    asyncio.run(copy(*sys.argv[1:5]))
