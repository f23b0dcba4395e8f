"""The resolution state store (streams/state_store.py): what a resolving batch reads while earlier batches
are still being acknowledged, and what the changelog replays."""
from __future__ import annotations

import orjson

from streams import state_store
from streams.state_store import StateStore


def test_a_batch_reads_what_earlier_batches_wrote_before_they_reach_rocksdb(tmp_path, monkeypatch):
    store = StateStore(tmp_path / "state")
    owners = store.views["owners"]
    owners["email:a@x.com"] = "C1"
    store.apply(store.take_delta(), 10)             # in RocksDB
    owners["email:b@x.com"] = "C2"
    del owners["email:a@x.com"]
    second = store.take_delta()                     # being acknowledged: not in RocksDB yet
    owners["email:c@x.com"] = "C3"                  # the next batch, resolving
    owners.cache.clear()                            # the cache starting over must not hide the batch in flight
    assert owners.get("email:a@x.com") is None and owners["email:b@x.com"] == "C2"
    assert store.db.get(b"owners\x00email:a@x.com") is not None
    assert store.db.get(b"owners\x00email:b@x.com") is None
    store.apply(second, 11)
    assert store.changelog_offset == 11 and owners.in_flight == []
    assert owners["email:c@x.com"] == "C3" and owners.pending == {"email:c@x.com": "C3"}
    reopened = StateStore.__new__(StateStore)       # what a restarted worker reads: RocksDB alone
    reopened.db, reopened.views = store.db, {"owners": state_store.StateView(store.db, "owners")}
    assert reopened.views["owners"].get("email:a@x.com") is None
    assert reopened.views["owners"]["email:b@x.com"] == "C2"


def test_changelog_records_replay_into_the_same_state_and_old_plain_records_still_read(tmp_path, monkeypatch):
    monkeypatch.setattr(state_store, "MAX_DELTA_BYTES", 200)   # several parts for one batch
    store = StateStore(tmp_path / "state")
    store.views["owners"]["email:gone@x.com"] = "C0"
    store.apply(store.take_delta(), 1)
    del store.views["owners"]["email:gone@x.com"]     # a deletion travels as null
    for i in range(20):
        store.views["clusters"][f"C{i}"] = {"identifiers": [f"email:p{i}@x.com"], "seq": i}
    delta = store.take_delta()
    records = delta.records("run-1")
    assert len(records) > 1 and all(r[:4] == state_store.LZ4_FRAME_MAGIC for r in records)
    store.apply(delta, 2)

    def contents(s: StateStore) -> dict:
        return {name: dict(view.items()) for name, view in s.views.items()}

    replica = StateStore(tmp_path / "replica")
    replica.views["owners"]["email:gone@x.com"] = "C0"
    replica.apply(replica.take_delta(), 1)
    replay = state_store.ChangelogReplay(replica, "broker-1", "changelog")
    applied = [replay.add(record, 10 + i) for i, record in enumerate(records)]
    assert applied == [False] * (len(records) - 1) + [True]           # in RocksDB once its last part arrived
    assert contents(replica) == contents(store) and "email:gone@x.com" not in dict(replica.views["owners"].items())
    assert replica.changelog_offset == 10 + len(records) - 1 and replica.changelog_topic == "changelog"
    assert replica.changelog_bytes == sum(map(len, records))
    # a batch whose last part never arrived (the worker died while writing it) is dropped, not half applied
    cut = StateStore(tmp_path / "cut")
    cut_replay = state_store.ChangelogReplay(cut, "broker-1", "changelog")
    assert cut_replay.add(records[0], 0) is False
    plain = orjson.dumps({"batch": "old", "part": 0, "parts": 1, "changes": [["meta", "seq", 7]]})
    assert cut_replay.add(plain, 1) is True                            # the next batch: the cut one is gone
    assert contents(cut) == {**{name: {} for name in state_store.VIEWS}, "meta": {"seq": 7}}
    assert cut.changelog_offset == 1 and cut.changelog_bytes == len(plain)


def test_rocksdicts_own_snapshot_reads_the_live_database_when_iterated(tmp_path):
    """Why freeze() makes a RocksDB checkpoint: rocksdict's Snapshot answers a get as of the snapshot, but its
    items() read the database as it is now (rocksdict 0.3.29). If this fails, rocksdict was fixed."""
    store = StateStore(tmp_path / "state")
    store.db[b"owners\x00email:a"] = b'"C1"'
    view = store.db.snapshot()
    store.db[b"owners\x00email:a"] = b'"C2"'
    store.db[b"owners\x00email:b"] = b'"C3"'
    assert view[b"owners\x00email:a"] == b'"C1"'
    assert dict(view.items()) == {b"owners\x00email:a": b'"C2"', b"owners\x00email:b": b'"C3"'}


def test_a_snapshot_of_the_frozen_state_ignores_every_later_write(tmp_path, monkeypatch):
    """What a compaction under load relies on: batches applied while the snapshot is read are not in it (they
    follow it in the new generation), and its two passes see the same keys."""
    monkeypatch.setattr(state_store, "MAX_DELTA_BYTES", 300)   # a snapshot of several parts
    store = StateStore(tmp_path / "state")
    owners = store.views["owners"]
    for i in range(40):
        owners[f"email:{i}"] = f"C{i}"
    store.apply(store.take_delta(), 1)
    frozen = store.freeze()
    expected = {name: dict(view.items()) for name, view in store.views.items()}
    for i in range(0, 40, 2):
        del owners[f"email:{i}"]                   # deleted after the freeze: still in the snapshot
    for i in range(40, 80):
        owners[f"email:{i}"] = f"C{i}"             # written after it: not in the snapshot
    owners["email:1"] = "changed"
    store.apply(store.take_delta(), 2)
    records = list(StateStore.read_frozen(frozen, "snapshot-1"))
    assert len(records) > 1 and not frozen.exists()    # the frozen copy is deleted once read
    replica = StateStore(tmp_path / "replica")
    replay = state_store.ChangelogReplay(replica, "broker-1", "changelog")
    assert [replay.add(record, i) for i, record in enumerate(records)][-1] is True
    assert {name: dict(view.items()) for name, view in replica.views.items()} == expected
    assert len(expected["owners"]) == 40 and expected["owners"]["email:1"] == "C1"
    left = store.freeze()                              # a compaction killed before reading it
    store.close()
    StateStore(tmp_path / "state").close()             # the next start removes it
    assert left.exists() is False
