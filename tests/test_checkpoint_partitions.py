"""The worker's own batching producer (streams/checkpoint.py) puts each keyed record on the partition Kafka's
default partitioner picks, so keyed topics stay co-partitioned with what any other client produces."""
import asyncio

from aiokafka.partitioner import DefaultPartitioner

from streams.checkpoint import Checkpoint


class _Metadata:
    """Only what the partition choice reads: how many partitions a topic has."""

    def __init__(self, partitions: dict[str, int]):
        self.partitions = partitions

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions[topic]))


def test_keyed_records_go_where_the_default_partitioner_puts_them():
    checkpoint = Checkpoint.__new__(Checkpoint)
    checkpoint.producer = _Metadata({"timeline": 4, "profiles": 6})
    checkpoint._partitions, checkpoint._hash_of = {}, {}
    keys = [f"customer-{n}".encode() for n in range(2_000)]

    async def choices(topic):
        return [await checkpoint._partition(topic, key, 0) for key in keys]

    for topic, count in (("timeline", 4), ("profiles", 6), ("timeline", 4)):   # the second pass reads the cache
        expected = [DefaultPartitioner()(key, list(range(count)), list(range(count))) for key in keys]
        assert asyncio.run(choices(topic)) == expected
    assert len(set(asyncio.run(choices("profiles")))) == 6
