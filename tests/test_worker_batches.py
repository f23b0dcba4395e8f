"""How the worker gathers a batch of channel events (streams/app.py read_batch): what one poll returns at a
trickle, and under a load what arrives for up to a moment more, so a worker that keeps up with a load does not
resolve it in many small batches."""
import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.kafka import consumer_config, ensure_topics, producer_config
from streams.app import BATCH_MAX_EVENTS, read_batch


def gathered(settings, bootstrap: str, load_poll_events: int, later: int, load_batch_seconds: float = 3.0,
             first: int = 2_000) -> tuple[list[int], float]:
    """Offsets read_batch returns when `first` events are on a topic and `later` more arrive 1 s after the
    first poll; and how long it took."""
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], 1, 1)
    partition = TopicPartition(topic, 0)

    async def produce(producer: AIOKafkaProducer, count: int, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        await asyncio.gather(*[await producer.send(topic, b"event", partition=0) for _ in range(count)])

    async def run() -> tuple[list[int], float]:
        producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
        consumer = AIOKafkaConsumer(**consumer_config(settings, bootstrap, None))
        await producer.start()
        await consumer.start()
        try:
            await produce(producer, first)
            consumer.assign([partition])
            # the first events in the consumer's hands, as when the worker has been polling all along
            while not await consumer.getmany(partition, timeout_ms=1000, max_records=1):
                pass
            consumer.seek(partition, 0)
            arrivals = asyncio.ensure_future(produce(producer, later, delay=1.0))
            started = asyncio.get_running_loop().time()
            batch = await read_batch(consumer, load_poll_events, load_batch_seconds)
            took = asyncio.get_running_loop().time() - started
            await arrivals
            return [message.offset for message in batch.get(partition, [])], took
        finally:
            await consumer.stop()
            await producer.stop()

    return asyncio.run(run())


@pytest.mark.integration
def test_at_a_trickle_a_batch_is_what_one_poll_returns_at_once(settings, kafka_bootstrap):
    offsets, took = gathered(settings, kafka_bootstrap, load_poll_events=BATCH_MAX_EVENTS, later=500)
    assert offsets and offsets == list(range(len(offsets))) and len(offsets) <= 2_000
    assert took < 1.0   # did not wait for the events that came later


@pytest.mark.integration
def test_under_a_load_a_batch_gathers_what_arrives_for_a_moment_more(settings, kafka_bootstrap):
    offsets, took = gathered(settings, kafka_bootstrap, load_poll_events=1, later=500)
    assert offsets == list(range(2_500))   # every event, in offset order, the later ones too
    assert 1.0 <= took < 3.5


@pytest.mark.integration
def test_under_a_load_a_batch_stops_at_its_size(settings, kafka_bootstrap):
    offsets, took = gathered(settings, kafka_bootstrap, load_poll_events=1, later=0, first=BATCH_MAX_EVENTS + 3_000)
    assert offsets == list(range(BATCH_MAX_EVENTS))
    assert took < 2.0   # full before its time was up
