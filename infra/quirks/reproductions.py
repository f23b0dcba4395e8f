"""The reproductions (see the package docstring); each uses a fresh topic and plain aiokafka."""
from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


def _topic(prefix: str) -> str:
    return f"quirk-{prefix}-{uuid.uuid4().hex[:8]}"


async def _create_one_partition_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()


async def end_offsets_after_batched_produce(bootstrap: str, records: int = 10) -> dict:
    """Produce `records` in ONE produce request to a 1-partition topic; Kafka reports end offset = records."""
    topic = _topic("end-offsets")
    await _create_one_partition_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=200)
    await producer.start()
    batch = producer.create_batch()
    for i in range(records):
        batch.append(key=None, value=b"%d" % i, timestamp=None)
    batch.close()
    await (await producer.send_batch(batch, topic, partition=0))
    await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    reported = (await consumer.end_offsets([partition]))[partition]
    readable = 0
    while batch := await consumer.getmany(timeout_ms=1000):
        readable += sum(len(messages) for messages in batch.values())
    await consumer.stop()
    return {"produced": records, "reported_end_offset": reported, "records_readable": readable}


async def idempotent_producer(bootstrap: str) -> dict:
    """enable_idempotence=True needs InitProducerId, which Kafka answers and tansu does not."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(producer.start(), 15)
        await asyncio.wait_for(producer.send_and_wait(_topic("idempotent"), b"x"), 15)
        return {"works": True, "error": None}
    except Exception as error:
        return {"works": False, "error": f"{type(error).__name__}: {error}"}
    finally:
        await producer.stop()


async def group_join_time(bootstrap: str, session_timeout_ms: int) -> dict:
    """Seconds for a lone consumer to join a new group; Kafka needs well under a second here."""
    topic = _topic("join")
    await _create_one_partition_topic(bootstrap, topic)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=topic, session_timeout_ms=session_timeout_ms,
                                heartbeat_interval_ms=min(1000, session_timeout_ms // 3),
                                request_timeout_ms=session_timeout_ms + 10_000)
    started = time.monotonic()
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    joined = time.monotonic() - started
    await consumer.stop()
    return {"session_timeout_s": session_timeout_ms / 1000, "join_seconds": round(joined, 2)}


async def auto_created_partitions(bootstrap: str) -> dict:
    """A metadata request for an unknown topic creates it; how many partitions does it get?"""
    topic = _topic("auto")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    await producer.send_and_wait(topic, b"x")
    partitions = producer.client.cluster.partitions_for_topic(topic)
    await producer.stop()
    return {"topic": topic, "partitions": len(partitions or ())}


async def concurrent_produce(bootstrap: str, producers: int = 4, records: int = 5000) -> dict:
    """Several producers writing one partition at once, each record acknowledged or failed, with
    UnknownError not retried (as aiokafka does by default). On tansu's s3:// engine (the embedded broker's
    disk) two produce requests racing to the same offset both write the batch object there; the loser's
    conditional PUT fails and its producer gets UnknownError. Kafka takes them all. How many lose depends
    on timing: seen here from none to 1,170 of 20,000 in one run."""
    from aiokafka import errors

    topic = _topic("concurrent")
    await _create_one_partition_topic(bootstrap, topic)
    retriable, errors.UnknownError.retriable = errors.UnknownError.retriable, False
    failures: dict[str, int] = {}

    async def produce(k: int) -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=2)
        await producer.start()
        try:
            futures = [await producer.send(topic, b"%d-%d" % (k, i), partition=0) for i in range(records)]
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            await producer.stop()
        for result in results:
            if isinstance(result, Exception):
                failures[type(result).__name__] = failures.get(type(result).__name__, 0) + 1
        return sum(not isinstance(r, Exception) for r in results)

    try:
        acknowledged = sum(await asyncio.gather(*(produce(k) for k in range(producers))))
    finally:
        errors.UnknownError.retriable = retriable
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    stored = 0
    while batch := await consumer.getmany(timeout_ms=5000):
        stored += sum(len(messages) for messages in batch.values())
    await consumer.stop()
    return {"sent": producers * records, "acknowledged": acknowledged, "failed": failures, "stored": stored}


async def fetch_cost_by_batches(bootstrap: str, first: int = 50, then: int = 1000, fetches: int = 20) -> dict:
    """Median milliseconds to fetch a partition's last record once it holds `first` one-record batches,
    then once it holds `first + then`. On tansu's s3:// engine every fetch lists all of the partition's
    batch objects (GET ?list-type=2&prefix=.../records/, no start-after) and nothing merges them, so the
    time grows with the batches written; on Kafka it does not."""
    topic = _topic("fetch-cost")
    await _create_one_partition_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    written, medians = 0, {}
    try:
        for count in (first, first + then):
            while written < count:  # one request each: one batch object each
                await (await producer.send(topic, b"x" * 100, partition=0))
                written += 1
            times = []
            for _ in range(fetches):
                consumer.seek(partition, written - 1)
                started = time.perf_counter()
                while not (await consumer.getmany(partition, timeout_ms=5000)).get(partition):
                    pass
                times.append((time.perf_counter() - started) * 1000)
            medians[f"ms_with_{count}_batches"] = round(sorted(times)[len(times) // 2], 1)
    finally:
        await producer.stop()
        await consumer.stop()
    return medians


async def delete_records(bootstrap: str, records: int = 10, before: int = 6) -> dict:
    """DeleteRecords (a topic's first records dropped, what a snapshot in the same changelog would need): Kafka
    moves the start offset; tansu drops the connection. The worker writes a snapshot as a new topic instead."""
    from aiokafka.admin import RecordsToDelete

    topic = _topic("delete-records")
    await _create_one_partition_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    for i in range(records):
        await producer.send_and_wait(topic, b"%d" % i, partition=0)
    await producer.stop()
    partition = TopicPartition(topic, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        await asyncio.wait_for(admin.delete_records({partition: RecordsToDelete(before)}), 15)
        error = None
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    consumer.assign([partition])
    first = (await consumer.beginning_offsets([partition]))[partition]
    await consumer.stop()
    return {"error": error, "first_offset_after": first, "asked_before": before}


async def run_all(bootstrap: str) -> dict:
    return {
        "end_offsets_after_batched_produce": await end_offsets_after_batched_produce(bootstrap),
        "idempotent_producer": await idempotent_producer(bootstrap),
        "group_join_default_faust_session_60s": await group_join_time(bootstrap, 60_000),
        "group_join_session_6s": await group_join_time(bootstrap, 6_000),
        "auto_created_partitions": await auto_created_partitions(bootstrap),
        "concurrent_produce": await concurrent_produce(bootstrap),
        "fetch_cost_by_batches": await fetch_cost_by_batches(bootstrap),
        "delete_records": await delete_records(bootstrap),
    }
