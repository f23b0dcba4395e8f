"""The embedded broker's known departures from Kafka (README "Known limitations"), and the workaround
for each. If an upgraded tansu fixes one, its first assertion fails: drop the workaround then."""
import asyncio

import pytest

from aiokafka import TopicPartition

from infra.kafka import ensure_topics, read_topic
from infra.quirks import reproductions as quirks

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def embedded_only(backend):
    if backend != "embedded":
        pytest.skip("tansu quirks: a real Kafka broker does not have them")


def test_end_offsets_stop_after_first_record_of_a_batch_and_read_topic_does_not_trust_them(settings, kafka_bootstrap):
    observed = asyncio.run(quirks.end_offsets_after_batched_produce(kafka_bootstrap, records=10))
    assert observed["records_readable"] == 10
    assert observed["reported_end_offset"] == 1, observed  # Kafka would say 10
    # Workaround: read_topic reads until idle, not up to the reported end.
    topic_name = f"quirk-read-{settings.streams.app_id}"
    ensure_topics(kafka_bootstrap, [topic_name], 1, 1)

    async def produce_and_read():
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False, linger_ms=100)
        await producer.start()
        futures = [await producer.send(topic_name, b"%d" % i) for i in range(500)]
        await asyncio.gather(*futures)
        await producer.stop()
        return await read_topic(settings, kafka_bootstrap, topic_name, idle_seconds=1.0)

    records = asyncio.run(produce_and_read())
    assert sorted(int(r.value) for r in records) == list(range(500))


def test_idempotent_producer_is_refused(kafka_bootstrap):
    observed = asyncio.run(quirks.idempotent_producer(kafka_bootstrap))
    assert observed["works"] is False and "UnknownError" in observed["error"]


def test_group_join_takes_half_the_session_timeout(kafka_bootstrap, settings):
    observed = asyncio.run(quirks.group_join_time(kafka_bootstrap, 4000))
    assert observed["join_seconds"] >= 1.5, observed  # Kafka joins a lone member at once
    # Workaround: every consumer of the project uses the configured short session timeout.
    configured = asyncio.run(quirks.group_join_time(kafka_bootstrap, settings.kafka.session_timeout_ms))
    assert configured["join_seconds"] <= settings.kafka.session_timeout_ms / 1000 / 2 + 1.0, configured


def test_auto_created_topics_get_four_partitions_so_topics_are_created_explicitly(kafka_bootstrap, settings):
    assert asyncio.run(quirks.auto_created_partitions(kafka_bootstrap))["partitions"] == 4
    created = ensure_topics(kafka_bootstrap, settings.topics.all_names(), 3, 1)
    assert created == settings.topics.all_names()
    assert ensure_topics(kafka_bootstrap, settings.topics.all_names(), 3, 1) == []  # idempotent

    async def partitions():
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            return [len(await producer.partitions_for(name)) for name in settings.topics.all_names()]
        finally:
            await producer.stop()

    assert asyncio.run(partitions()) == [3] * len(settings.topics.all_names())


def test_fetch_responses_report_the_true_end_which_table_recovery_uses(settings, kafka_bootstrap):
    """Faust recovers tables up to the changelogs' end offsets; streams/app.py takes them from fetch
    responses' high watermark (infra.kafka.fetched_end_offsets), which tansu reports correctly."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from infra.kafka import fetched_end_offsets

    topic_name = f"quirk-hw-{settings.streams.app_id}"
    ensure_topics(kafka_bootstrap, [topic_name], 2, 1)

    async def scenario():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False, linger_ms=100)
        await producer.start()
        await asyncio.gather(*[await producer.send(topic_name, b"x", partition=0) for _ in range(25)])
        await producer.stop()
        partitions = [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
        await consumer.start()
        reported = await consumer.end_offsets(partitions)
        await consumer.stop()
        return reported, await fetched_end_offsets(kafka_bootstrap, reported)

    reported, fetched = asyncio.run(scenario())
    p0, p1 = (TopicPartition(topic_name, 0), TopicPartition(topic_name, 1))
    assert reported[p0] < 25                      # the quirk
    assert (fetched[p0], fetched[p1]) == (25, 0)  # the workaround


def test_concurrent_produce_to_one_partition_fails_on_the_disk_engine_and_is_retried(settings, tmp_path):
    """tansu's s3:// engine answers UnknownError to the loser of two produce requests racing to one offset
    (nothing of it stored); infra.kafka makes UnknownError retriable, and then every record is stored once."""
    from infra.broker import EmbeddedBroker

    with EmbeddedBroker(tmp_path / "logs", "disk") as broker:
        raw = asyncio.run(quirks.concurrent_produce(broker.bootstrap_servers))
        # How many requests lose the race depends on timing (none on a quiet machine, hundreds under load):
        # whatever failed was not stored, so retrying it is exactly right.
        assert set(raw["failed"]) <= {"UnknownError"}, raw
        assert raw["stored"] == raw["acknowledged"], raw
        print(f"without retries: {raw}")

        async def retried():
            from aiokafka import AIOKafkaProducer

            ensure_topics(broker.bootstrap_servers, ["retried"], 1, 1)

            async def produce(k):
                producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, enable_idempotence=False, linger_ms=2)
                await producer.start()
                await asyncio.gather(*[await producer.send("retried", b"%d-%d" % (k, i), partition=0) for i in range(5000)])
                await producer.stop()

            await asyncio.gather(*(produce(k) for k in range(4)))
            return [r.value for r in await read_topic(settings, broker.bootstrap_servers, "retried", idle_seconds=5)]

        from infra import kafka  # noqa: F401  (its import made UnknownError retriable)
        stored = asyncio.run(retried())
        assert len(stored) == len(set(stored)) == 20000


def test_delete_records_is_refused_so_a_compaction_writes_a_new_changelog_topic(kafka_bootstrap):
    observed = asyncio.run(quirks.delete_records(kafka_bootstrap))
    assert observed["error"] is not None and observed["first_offset_after"] == 0, observed
    # Workaround: streams/app.py compact_changelog writes the snapshot as the changelog's next generation
    # (a topic of its own) and deletes the old topic (tests/test_changelog_compaction.py).
