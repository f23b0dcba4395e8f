"""The resolution state's changelog in generations: compacted into a snapshot while batches go on, recovered
from it on a fresh machine, and left whole by a compaction a kill cuts short (streams/app.py
compact_changelog, recover_state)."""
from __future__ import annotations

import asyncio
import sys
import time

import pytest
from aiokafka import AIOKafkaProducer

from infra.hub import WorkerProcess, child_environment
from infra.kafka import broker_id, ensure_topics, matching_topics, producer_config
from infra.processes import spawn
from streams import app as streams_app, state_store
from streams.app import (changelog_generation, compact_changelog, compaction_due, recover_state, state_changelog,
                         write_records)
from streams.checkpoint import Checkpoint
from streams.state_store import StateStore, generation_complete_record
from tests.fixtures import channel_topic
from tests.test_identity_stream import channel_event, customer_of, produce, read

pytestmark = pytest.mark.integration


def contents(store: StateStore) -> dict:
    return {name: dict(view.items()) for name, view in store.views.items()}


def generations(settings) -> list[str]:
    return matching_topics(settings.kafka.bootstrap_servers, f"^{state_changelog(settings)}")


def with_compaction(settings, min_bytes: int, factor: float = 3.0):
    streams = settings.streams.model_copy(update={"changelog_compact_min_bytes": min_bytes,
                                                  "changelog_compact_factor": factor})
    return settings.model_copy(update={"streams": streams})


async def state_written(settings, path) -> tuple[StateStore, AIOKafkaProducer, Checkpoint]:
    """A state written in four batches through the worker's checkpoint to the first generation: keys written,
    changed, deleted. The producer is still running: stop it."""
    bootstrap = settings.kafka.bootstrap_servers
    ensure_topics(bootstrap, [changelog_generation(settings, 0)], 1, 1)
    store = StateStore(path)
    producer = AIOKafkaProducer(**producer_config(settings, bootstrap))
    await producer.start()
    return store, producer, await write_batches(settings, store, producer, changelog_generation(settings, 0))


async def write_batches(settings, store: StateStore, producer, changelog: str) -> Checkpoint:
    writer = Checkpoint(store, producer, changelog, broker_id(settings.kafka.bootstrap_servers))
    owners, clusters = store.views["owners"], store.views["clusters"]
    for batch in range(4):
        for i in range(batch * 20, batch * 20 + 20):
            owners[f"email:{i}"] = f"c{i}"
            clusters[f"c{i}"] = {"identifiers": [f"email:{i}"], "seq": i}
        if batch == 2:
            for i in range(0, 10):   # deleted before the snapshot: must stay deleted after it
                del owners[f"email:{i}"]
                del clusters[f"c{i}"]
        await writer.write([])
    writer.apply_acknowledged()
    return writer


@pytest.mark.parametrize("under_lock", [0, 20])   # the batches written during the snapshot: before the lock, or under it
def test_compaction_writes_a_snapshot_generation_a_fresh_machine_recovers_from(settings, tmp_path, monkeypatch,
                                                                              under_lock):
    monkeypatch.setattr(state_store, "MAX_DELTA_BYTES", 400)   # a snapshot of several records
    monkeypatch.setattr(streams_app, "CATCH_UP_UNDER_LOCK", under_lock)
    settings = with_compaction(settings, min_bytes=1)
    bootstrap = settings.kafka.bootstrap_servers
    first, second = changelog_generation(settings, 0), changelog_generation(settings, 1)

    async def scenario():
        store, producer, writer = await state_written(settings, tmp_path / "state")
        try:
            assert compaction_due(settings, store)
            turn = asyncio.Lock()
            compaction = asyncio.ensure_future(compact_changelog(settings, bootstrap, store, writer, turn))
            while writer.tee is None:       # until the snapshot is taken: resolution goes on meanwhile
                await asyncio.sleep(0)
            async with turn:                # a batch written during the snapshot, to the old generation
                store.views["owners"]["email:during"] = "c-during"
                del store.views["owners"]["email:12"]
                await writer.write([])
            report = await compaction
            due_after = compaction_due(settings, store)
            before_late = store.changelog_bytes
            store.views["owners"]["email:late"] = "c-late"   # a batch after the switch goes to the new generation
            await writer.write([])
            writer.apply_acknowledged()
            late = store.changelog_bytes - before_late
        finally:
            await producer.stop()
        fresh = StateStore(tmp_path / "fresh")
        recovered = await recover_state(settings, bootstrap, fresh)
        return store, fresh, report, due_after, recovered, late

    store, fresh, report, due_after, recovered, late_bytes = asyncio.run(scenario())
    assert report["from"] == first and report["to"] == second and report["snapshot_records"] > 1 and late_bytes > 0
    assert report["records_during_snapshot"] == 1                   # written again after the snapshot
    assert generations(settings) == [second]                        # the old generation is deleted
    assert store.changelog_topic == second   # its size: the snapshot, the batch written during it, its completion, then one
    assert 0 < store.changelog_snapshot_bytes < store.changelog_bytes - late_bytes
    assert not due_after                                             # not again until it grows
    assert recovered["changelog"] == second and recovered["from_offset"] == 0
    assert contents(fresh) == contents(store)
    owners = dict(fresh.views["owners"].items())
    assert "email:3" not in owners and "email:12" not in owners
    assert owners["email:during"] == "c-during" and owners["email:late"] == "c-late"
    assert fresh.changelog_topic == second                           # and it knows the sizes the worker knew
    assert (fresh.changelog_bytes, fresh.changelog_snapshot_bytes) == (store.changelog_bytes, store.changelog_snapshot_bytes)


def test_a_compaction_cut_short_leaves_a_whole_generation_to_recover_from(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(state_store, "MAX_DELTA_BYTES", 400)
    bootstrap = settings.kafka.bootstrap_servers
    first, second = changelog_generation(settings, 0), changelog_generation(settings, 1)

    async def scenario():
        store, producer, _ = await state_written(settings, tmp_path / "state")
        await producer.stop()
        snapshot = store.snapshot("snapshot-test")
        assert len(snapshot) > 1
        complete = generation_complete_record("test")
        outcomes = {}

        async def fresh_machine(name: str, records: list[bytes]) -> None:
            ensure_topics(bootstrap, [second], 1, 1)
            await write_records(settings, bootstrap, second, records)
            fresh = StateStore(tmp_path / name)
            outcomes[name] = (await recover_state(settings, bootstrap, fresh), contents(fresh), generations(settings))

        # Killed while writing the snapshot (its first record only), or after it and before the records written
        # meanwhile and the completion record: a fresh machine takes the old generation, and nothing of the new.
        await fresh_machine("cut short", snapshot[:1])
        await fresh_machine("not completed", snapshot)
        # Killed after the completion record, before the worker followed it: a restart keeps the old
        # generation...
        ensure_topics(bootstrap, [second], 1, 1)
        await write_records(settings, bootstrap, second, snapshot + [complete])
        outcomes["restart"] = (await recover_state(settings, bootstrap, store), contents(store), generations(settings))
        # ...and a fresh machine takes the new one, which holds the same state.
        await fresh_machine("completed", snapshot + [complete])
        return contents(store), outcomes

    expected, outcomes = asyncio.run(scenario())
    for name in ("cut short", "not completed"):
        report, state, left = outcomes[name]
        assert report["changelog"] == first and state == expected and left == [first], name
    report, state, left = outcomes["restart"]
    assert report["changelog"] == first and report["replayed_records"] == 0 and state == expected and left == [first]
    report, state, left = outcomes["completed"]
    assert report["changelog"] == second and report["complete"] and state == expected and left == [second]


def test_a_compaction_after_a_failed_one_takes_a_new_generation(settings, tmp_path, monkeypatch):
    """A failed compaction may leave its generation with a whole snapshot and part of what followed it; the next
    one must not write after that (keys deleted in between would come back): it takes the next number."""
    monkeypatch.setattr(state_store, "MAX_DELTA_BYTES", 400)
    bootstrap = settings.kafka.bootstrap_servers
    first, failed, third = (changelog_generation(settings, n) for n in range(3))

    async def scenario():
        store, producer, writer = await state_written(settings, tmp_path / "state")
        try:
            ensure_topics(bootstrap, [failed], 1, 1)
            await write_records(settings, bootstrap, failed, store.snapshot("snapshot-failed"))
            del store.views["owners"]["email:15"]      # after the failed one's snapshot
            await writer.write([])
            writer.apply_acknowledged()
            report = await compact_changelog(settings, bootstrap, store, writer, asyncio.Lock())
        finally:
            await producer.stop()
        fresh = StateStore(tmp_path / "fresh")
        return store, report, await recover_state(settings, bootstrap, fresh), fresh

    store, report, recovered, fresh = asyncio.run(scenario())
    assert report["to"] == third and report["old_deleted"] and generations(settings) == [third]
    assert recovered["changelog"] == third and contents(fresh) == contents(store)
    assert "email:15" not in dict(fresh.views["owners"].items())


@pytest.mark.parametrize("step", ["", "snapshot", "switch"])
def test_worker_compacts_and_keeps_every_customer_id(settings, tmp_path, step):
    """A real worker with a small threshold compacts while it resolves; stopped by a kill inside the compaction
    (after the snapshot, or after switching to it) or not at all, the worker started again, on this machine or
    a fresh one, resolves known people to the ids they had."""
    settings = with_compaction(settings, min_bytes=1, factor=10)
    bootstrap = settings.kafka.bootstrap_servers
    topic = channel_topic(settings, "compaction")
    ensure_topics(bootstrap, [topic], settings.topics.partitions, 1)
    people = 30
    rounds = [[channel_event(f"W-{r}-{p}", [("email", f"k{p}@x.com")], p) for p in range(r * 10, r * 10 + 10)]
              for r in range(3)]
    again = [channel_event(f"A-{p}", [("email", f"k{p}@x.com")], 600 + p) for p in range(people)]

    class Running:
        pass

    async def timeline_ids(hub, count: int) -> dict[str, str]:
        deadline = time.monotonic() + 90
        while True:
            ids = {record["event_id"]: record["customer_id"]
                   for _, record in await read(settings, hub, settings.topics.customer_timeline, "timeline_event")}
            if len(ids) >= count:
                return ids
            assert time.monotonic() < deadline, hub.worker.log_file.read_text()[-3000:]
            await asyncio.sleep(0.5)

    async def scenario():
        hub = Running()
        hub.bootstrap = bootstrap
        env = child_environment(settings, bootstrap)
        if step:
            env["OMNIHUB_CRASH_AFTER"] = step
        log = tmp_path / "first.log"
        first = spawn([sys.executable, "-m", "infra.cli", "worker"], log, env=env)
        hub.worker = Running()
        hub.worker.log_file = log
        for events in rounds:   # one batch each: the changelog holds a record a batch
            await produce(settings, topic, events)
            await timeline_ids(hub, sum(len(r) for r in rounds[:rounds.index(events) + 1]))
        deadline = time.monotonic() + 60
        while "changelog compacted" not in log.read_text() and first.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.5)
        if step:
            code = await asyncio.to_thread(first.wait, 30)
        else:
            first.kill()
            code = await asyncio.to_thread(first.wait, 30)
        before = await timeline_ids(hub, people)
        followed = generations(settings)
        worker = WorkerProcess(settings, bootstrap).start()   # on this machine: its RocksDB as the kill left it
        hub.worker = worker
        try:
            await produce(settings, topic, again)
            after = await timeline_ids(hub, 2 * people)
        finally:
            worker.stop()
        restarted = worker.log_file.read_text()
        import shutil
        shutil.rmtree(settings.data_dir / "state")   # a fresh machine
        worker = WorkerProcess(settings, bootstrap).start()
        hub.worker = worker
        try:
            late = [channel_event(f"F-{p}", [("email", f"k{p}@x.com")], 900 + p) for p in range(people)]
            await produce(settings, topic, late)
            fresh = await timeline_ids(hub, 3 * people)
        finally:
            worker.stop()
        return code, log.read_text(), before, followed, after, restarted, fresh

    code, first_log, before, followed, after, restarted, fresh = asyncio.run(scenario())
    assert ("changelog compacted" in first_log) == (step == "")   # a kill inside comes before the line
    if step:
        assert code == 137 and f"OMNIHUB_CRASH_AFTER={step}" in first_log
    assert len(followed) == (1 if step == "" else 2), followed   # a kill inside leaves the other to delete
    first_ids = {event["event_id"]: customer_of(settings, "email:" + event["identifiers"][0]["value"])
                 for r in rounds for event in r}
    assert {e: before[e] for e in first_ids} == first_ids
    for event in again:   # known people keep their ids, after a restart and on a fresh machine
        assert after[event["event_id"]] == customer_of(settings, "email:" + event["identifiers"][0]["value"])
    for p in range(people):
        assert fresh[channel_event(f"F-{p}", [], 0)["event_id"]] == customer_of(settings, f"email:k{p}@x.com")
    assert len(generations(settings)) == 1
    assert "deleted the resolution state's changelog generations" in restarted or step == ""
    assert "Unclosed AIOKafkaProducer" not in restarted and "Traceback" not in restarted   # a clean stop says nothing


def test_compaction_is_due_when_the_generation_outgrows_the_state(settings, tmp_path):
    store = StateStore(tmp_path / "state")
    due = lambda min_bytes, factor: compaction_due(with_compaction(settings, min_bytes, factor), store)  # noqa: E731
    store.apply({}, 9, generation_bytes=1_000, snapshot_bytes=400)   # a generation that began with a snapshot
    assert not due(1, 3) and due(1, 2.5)                              # its size against the snapshot's
    assert not due(1_001, 2)                                          # and never under the minimum
    store.apply({}, 9, generation_bytes=1_200)
    assert due(1, 3)
    first = StateStore(tmp_path / "first")                           # the first generation: no snapshot yet,
    first.apply({}, 9, written=500)                                    # the state's size is RocksDB's estimate
    assert first.changelog_snapshot_bytes == 0 and first.state_bytes == 0   # all of it still in the memtable
    assert compaction_due(with_compaction(settings, 500), first)
    assert not compaction_due(with_compaction(settings, 501), first)


def test_a_snapshot_writer_that_fails_says_why_in_one_line(settings, tmp_path):
    """The snapshot is written by a process of its own: when it fails, the compaction fails with its reason
    (and the worker's timer logs it and tries again later)."""
    bootstrap = settings.kafka.bootstrap_servers
    topic = changelog_generation(settings, 7)
    ensure_topics(bootstrap, [topic], 1, 1)
    with pytest.raises(RuntimeError) as refused:
        asyncio.run(streams_app.write_frozen_snapshot(settings, bootstrap, tmp_path / "never-frozen", topic))
    said = str(refused.value)
    assert "\n" not in said and said.startswith("the snapshot writer stopped (exit status 1): ")
    assert f"writing the snapshot to {topic} failed" in said and "never-frozen" in said
