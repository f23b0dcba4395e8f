"""The resolution state: a local RocksDB (rocksdict) under data_dir/state, changed once per batch, with
each batch's change also written as one delta to a changelog topic.

Why not Faust tables: a table write is one changelog record per key (700-900 us an event here), their
RocksDB store needs a current event for every write (our writes happen once per batch, outside any
event), and memory tables replay whole changelogs at every start (minutes on the disk-backed broker).

Commit order for one batch (streams/app.py, streams/checkpoint.py):
1. resolve the batch against views of this store (reads hit the cache or RocksDB, writes wait in the views);
2. publish the batch's delta to the changelog and wait for the broker's ack;
3. publish the batch's outputs, wait for their acks; then the input offsets are committed;
4. when the resolver next holds the state, write the acknowledged delta and the changelog offset it ends at
   to RocksDB in one atomic WriteBatch.
Batches overlap (the next is resolved while one is acknowledged), each step in batch order; a delta taken but
not yet in RocksDB stays readable through the views. A worker killed anywhere resumes with state that matches
its committed offsets or is ahead of them (RocksDB plus the changelog past its offset); events redelivered
after a state ahead of them are known (the events view) and re-published as first published. A fresh machine
(no local RocksDB) rebuilds the state from the changelog; a restarted worker only reads the changelog written
after the offset its RocksDB holds.
"""
from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, MutableMapping

import lz4.frame
import orjson
from rocksdict import AccessType, BlockBasedOptions, Checkpoint as RocksCheckpoint, Options, Rdict, WriteBatch

log = logging.getLogger(__name__)

VIEWS = ("owners", "clusters", "aliases", "sightings", "events", "meta", "profiles", "sealed", "mentions")
CHANGELOG_OFFSET = b"\x00changelog-offset"
CHANGELOG_BROKER = b"\x00changelog-broker"
CHANGELOG_TOPIC = b"\x00changelog-topic"          # absent: the first generation (streams/app.py state_changelog)
CHANGELOG_BYTES = b"\x00changelog-bytes"          # bytes of the records of that generation up to the offset
CHANGELOG_SNAPSHOT_BYTES = b"\x00changelog-snapshot-bytes"   # of the snapshot it starts with (0: none)
MAX_DELTA_BYTES = 512 * 1024  # one changelog record at most, before compression; a larger delta is split in parts
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
CACHE_MAX_KEYS = 500_000      # decoded values kept per view (then the cache starts over)
_ABSENT = object()            # in the cache: known not to exist; in pending: deleted
_MISS = object()


class StateView(MutableMapping):
    """One named mapping of the store. Reads cost one dict lookup once a key was read or written: the
    cache holds decoded values, misses, and this batch's writes (this process is the state's only writer,
    so the cache stays true). Writes also wait in `pending` until the batch is taken as a delta; a delta
    taken but not yet applied to RocksDB stays readable in `in_flight` (the worker resolves the next batch
    while the previous one is being acknowledged)."""

    def __init__(self, db: Rdict, name: str):
        self.db = db
        self.prefix = name.encode() + b"\x00"
        self.pending: dict[str, Any] = {}
        self.in_flight: list[dict[str, Any]] = []
        self.cache: dict[str, Any] = {}

    def _load(self, key: str) -> Any:
        """A cache miss: this batch's write, a delta in flight, else RocksDB."""
        value = self.pending.get(key, _MISS)
        for delta in reversed(self.in_flight):
            if value is not _MISS:
                break
            value = delta.get(key, _MISS)
        if value is _MISS:
            raw = self.db.get(self.prefix + key.encode())
            value = _ABSENT if raw is None else orjson.loads(raw)
        elif value is None:
            value = _ABSENT
        if len(self.cache) >= CACHE_MAX_KEYS:
            self.cache.clear()
        self.cache[key] = value
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self.cache.get(key, _MISS)
        if value is _MISS:
            value = self._load(key)
        return default if value is _ABSENT else value

    def __getitem__(self, key: str) -> Any:
        value = self.cache.get(key, _MISS)
        if value is _MISS:
            value = self._load(key)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: str, value: Any) -> None:
        self.cache[key] = value
        self.pending[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.cache[key] = _ABSENT
        self.pending[key] = _ABSENT

    def __iter__(self) -> Iterator[str]:
        """Committed keys (the batch's pending writes are not listed): for timers and tests, not the hot path."""
        for raw_key in self.db.keys(from_key=self.prefix):
            if not raw_key.startswith(self.prefix):
                return
            yield raw_key[len(self.prefix):].decode()

    def items(self):  # type: ignore[override]
        """Committed keys with their latest values (a write not yet in RocksDB wins): for timers, not the hot path."""
        for raw_key, raw in self.db.items(from_key=self.prefix):
            if not raw_key.startswith(self.prefix):
                return
            key = raw_key[len(self.prefix):].decode()
            value = self.cache.get(key, _MISS)
            if value is _MISS:
                value = self._load(key) if self.pending or self.in_flight else orjson.loads(raw)
            if value is not _ABSENT:
                yield key, value

    def unwritten_keys(self) -> set[str]:
        """Keys written or deleted since RocksDB last received this view's changes (items() lists none of
        the new ones): this batch's writes and the deltas in flight."""
        return set(self.pending).union(*self.in_flight)

    def values(self):  # type: ignore[override]
        for _, value in self.items():
            yield value

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Delta:
    """One batch's changes, each value serialized once: the changelog records and the RocksDB write
    are both made of the same bytes."""

    def __init__(self, changes: dict[str, dict[str, Any]]):
        self.changes = changes   # {view: {key: value, or None for deleted}}
        self.encoded = [(name, key, None if value is None else orjson.dumps(value))
                        for name, view_changes in changes.items() for key, value in view_changes.items()]

    def __bool__(self) -> bool:
        return bool(self.encoded)

    def records(self, batch_id: str) -> list[bytes]:
        """The changelog records: parts of at most about MAX_DELTA_BYTES, each naming its batch and how many
        parts it has, so recovery applies a batch only when all its parts arrived. A part is
        {"batch": id, "part": i, "parts": n, "changes": [[view, key, value], ...]}, compressed as an LZ4
        frame: the changelog was the largest thing the worker wrote (about 530 bytes an event, more than its
        outputs), and the embedded broker's disk is its limit; LZ4 makes it about a third for ~2 us an event."""
        items = [change_item(name.encode(), key, value) for name, key, value in self.encoded]
        parts = split_parts(items)
        return [compressed_part(batch_id, i, len(parts), part) for i, part in enumerate(parts)]


def change_item(name: bytes, key: str, value: bytes | None) -> bytes:
    """[view, key, value] as one changelog part lists it; value is the stored JSON, None for a deletion."""
    return b"".join((b'["', name, b'",', orjson.dumps(key), b",", value or b"null", b"]"))


def split_parts(items: list) -> list[list]:
    """items (anything with a len: the items, or their sizes) in parts of at most about MAX_DELTA_BYTES."""
    parts: list[list] = [[]]
    size = 0
    for item in items:
        length = item if isinstance(item, int) else len(item)
        if parts[-1] and size + length > MAX_DELTA_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += length + 1
    return parts


def compressed_part(batch_id: str, index: int, count: int, items: list[bytes]) -> bytes:
    return lz4.frame.compress(b"".join((b'{"batch":', orjson.dumps(batch_id), b',"part":', str(index).encode(),
                                        b',"parts":', str(count).encode(), b',"changes":[', b",".join(items), b"]}")))


def snapshot_parts(view: Rdict, batch_id: str) -> Iterator[bytes]:
    """Everything in a RocksDB state as one changelog batch, a record at a time, read as stored: no value is
    decoded. Two passes, the first for the parts' sizes, so that neither the state nor its records are ever
    held whole in memory: the view must not change meanwhile."""
    def items():
        for stored_key, value in view.items():
            if not stored_key.startswith(b"\x00"):   # the store's own bookkeeping, not a view
                name, _, key = stored_key.partition(b"\x00")
                yield name, key.decode(), value

    sizes = split_parts([len(name) + len(orjson.dumps(key)) + len(value) + 6 for name, key, value in items()])
    part, index = [], 0
    for name, key, value in items():
        part.append(change_item(name, key, value))
        if len(part) == len(sizes[index]):
            yield compressed_part(batch_id, index, len(sizes), part)
            part, index = [], index + 1
    if index == 0:   # an empty state: one part that changes nothing, so the snapshot is still a batch
        yield compressed_part(batch_id, 0, 1, [])


def rocksdb_options(file_bloom: bool = True, memtable_bloom: bool = True) -> Options:
    """Most reads of a new event's keys miss (its id, its new identifiers: about 3.6 reads an event), and a
    miss must be asked of every file and of the memtable, which holds the last batches' writes. Bloom filters
    answer those without a search: per file (4.39 -> 0.93 us a miss among 1M keys on disk) and in the
    memtable (a skip-list search otherwise: 2.70 -> 0.38 us a miss with batches of 40,000 keys written between
    the reads); both from tests/benchmarks/bench_state_reads.py."""
    options = Options(raw_mode=True)
    if file_bloom:
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
    if memtable_bloom:
        options.set_memtable_prefix_bloom_ratio(0.1)   # its share of the memtable's memory
        options.set_memtable_whole_key_filtering(True)
    return options


class StateStore:
    def __init__(self, path: Path):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        for frozen in path.parent.glob(f"{path.name}.frozen-*"):   # left by a compaction a kill cut short
            shutil.rmtree(frozen, ignore_errors=True)
        self.db = Rdict(str(path), rocksdb_options())
        self.views = {name: StateView(self.db, name) for name in VIEWS}

    def close(self) -> None:
        self.db.close()

    @property
    def changelog_offset(self) -> int:
        """The changelog offset the local state includes (-1: none)."""
        raw = self.db.get(CHANGELOG_OFFSET)
        return -1 if raw is None else int(raw)

    @property
    def changelog_broker(self) -> str:
        raw = self.db.get(CHANGELOG_BROKER)
        return "" if raw is None else raw.decode()

    @property
    def changelog_topic(self) -> str:
        """The changelog generation the local state follows ("": the first, or no state yet)."""
        raw = self.db.get(CHANGELOG_TOPIC)
        return "" if raw is None else raw.decode()

    def _meta_int(self, key: bytes) -> int:
        raw = self.db.get(key)
        return 0 if raw is None else int(raw)

    @property
    def changelog_bytes(self) -> int:
        """Bytes of the followed generation's records up to the offset the state includes."""
        return self._meta_int(CHANGELOG_BYTES)

    @property
    def changelog_snapshot_bytes(self) -> int:
        """Bytes of the snapshot the followed generation starts with (0: it starts with none)."""
        return self._meta_int(CHANGELOG_SNAPSHOT_BYTES)

    @property
    def state_bytes(self) -> int:
        """RocksDB's estimate of the state's size on disk (compressed, as a snapshot's records are; what is
        still in the memtable is not counted)."""
        return self.db.property_int_value("rocksdb.estimate-live-data-size") or 0

    def freeze(self) -> Path:
        """The state as it is now, kept apart for read_frozen() while this store goes on changing: a RocksDB
        checkpoint (the memtable flushed, then the files hard-linked), next to the store. Not rocksdict's
        Snapshot: iterating one reads the live database (rocksdict 0.3.29; tests/test_state_store.py)."""
        frozen = self.path.with_name(f"{self.path.name}.frozen-{uuid.uuid4().hex[:12]}")
        RocksCheckpoint(self.db).create_checkpoint(str(frozen))
        return frozen

    def snapshot(self, batch_id: str) -> list[bytes]:
        """The whole state as one changelog batch (records as Delta.records makes them), as it is now: take it
        with nothing pending or in flight (a compaction, which cannot, reads a frozen copy: read_frozen)."""
        return list(snapshot_parts(self.db, batch_id))

    @staticmethod
    def read_frozen(frozen: Path, batch_id: str) -> Iterator[bytes]:
        """The snapshot of the state as freeze() kept it, a record at a time; that copy is deleted once read."""
        view = Rdict(str(frozen), rocksdb_options(), access_type=AccessType.read_only())
        try:
            yield from snapshot_parts(view, batch_id)
        finally:
            view.close()
            shutil.rmtree(frozen, ignore_errors=True)

    def clear(self) -> None:
        """Delete everything: the state and where its changelog stands (recovery starting over)."""
        keys = list(self.db.keys())
        for start in range(0, len(keys), 100_000):
            batch = WriteBatch(raw_mode=True)
            for key in keys[start:start + 100_000]:
                batch.delete(key)
            self.db.write(batch)
        for view in self.views.values():
            view.cache.clear()

    def take_delta(self) -> Delta:
        """The batch's changes, moved from the views' pending writes to their in-flight deltas until
        apply() writes them to RocksDB."""
        changes = {}
        for name, view in self.views.items():
            if view.pending:
                changes[name] = {key: None if value is _ABSENT else value for key, value in view.pending.items()}
                view.in_flight.append(changes[name])
                view.pending = {}
        return Delta(changes)

    def apply(self, delta: Delta | dict[str, dict[str, Any]], changelog_offset: int | None,
              broker: str | None = None, **changelog: Any) -> None:
        """Write a delta and where the changelog stands (its offset, broker, and what write_position takes) in
        one atomic write. Deltas taken from this store are applied in the order they were taken."""
        if not isinstance(delta, Delta):
            delta = Delta(delta)
        batch = WriteBatch(raw_mode=True)
        prefixes = {name: name.encode() + b"\x00" for name in delta.changes}
        for name, key, value in delta.encoded:
            if value is None:
                batch.delete(prefixes[name] + key.encode())
            else:
                batch.put(prefixes[name] + key.encode(), value)
        self.write_position(batch, changelog_offset, broker, **changelog)
        self.db.write(batch)
        for name, changes in delta.changes.items():
            view = self.views.get(name)
            if view is not None:
                if view.in_flight and view.in_flight[0] is changes:
                    view.in_flight.pop(0)
                else:  # a delta from the changelog (recovery): what the cache held is stale
                    for key in changes:
                        view.cache.pop(key, None)

    def write_position(self, batch: WriteBatch, changelog_offset: int | None, broker: str | None = None,
                       topic: str | None = None, written: int = 0, generation_bytes: int | None = None,
                       snapshot_bytes: int | None = None) -> None:
        """Where the changelog stands, added to a write: the offset the state includes, the broker, the generation
        followed (topic), and its size: `written` bytes more, or `generation_bytes` in all (a new generation), and
        the bytes of the snapshot it starts with."""
        if changelog_offset is not None:
            batch.put(CHANGELOG_OFFSET, str(changelog_offset).encode())
        if broker is not None:
            batch.put(CHANGELOG_BROKER, broker.encode())
        if topic is not None:
            batch.put(CHANGELOG_TOPIC, topic.encode())
        if generation_bytes is not None or written:
            total = generation_bytes if generation_bytes is not None else self.changelog_bytes + written
            batch.put(CHANGELOG_BYTES, str(total).encode())
        if snapshot_bytes is not None:
            batch.put(CHANGELOG_SNAPSHOT_BYTES, str(snapshot_bytes).encode())


def delta_records(delta: dict[str, dict[str, Any]], batch_id: str) -> list[bytes]:
    return Delta(delta).records(batch_id)


GENERATION_COMPLETE = "generation-complete-"   # the batch id prefix of the record that ends a snapshot's catch-up


def generation_complete_record(run_id: str) -> bytes:
    """The record that makes a new changelog generation whole: its snapshot and the batches written during it
    are all before it (a batch that changes nothing)."""
    return compressed_part(GENERATION_COMPLETE + run_id, 0, 1, [])


class ChangelogReplay:
    """Recovery: feed a generation's records in order; each batch whose parts all arrived is written to
    RocksDB in one atomic write with the offset of its last record. A batch's parts go into that write as
    they arrive, decoded one at a time: a snapshot of a million identifiers is one batch of about 1,000
    parts, and held decoded until its end it took 14.6 GB and 52 s to apply (bench_recovery.py). A batch
    left incomplete by a crash is dropped when the next one begins: its events were redelivered."""

    def __init__(self, store: StateStore, broker: str, topic: str, snapshot_first: bool = False):
        """snapshot_first: this generation begins with its snapshot, whose size is recorded as such."""
        self.store, self.broker, self.topic, self.snapshot_first = store, broker, topic, snapshot_first
        self.batch_id: str | None = None
        self.parts = 0
        self.size = 0
        self.writes: WriteBatch | None = None
        self.applied = 0
        self.complete = False   # the generation's completion record was applied

    def add(self, record: bytes, offset: int) -> bool:
        """True when the record completed its batch (and the batch is in RocksDB)."""
        # records written before compression are plain JSON
        part = orjson.loads(lz4.frame.decompress(record) if record[:4] == LZ4_FRAME_MAGIC else record)
        if part["batch"] != self.batch_id or part["part"] != self.parts:
            self.batch_id, self.parts, self.size, self.writes = part["batch"], 0, 0, WriteBatch(raw_mode=True)
            if part["part"] != 0:
                self.batch_id = None
                return False
        for name, key, value in part["changes"]:
            stored = name.encode() + b"\x00" + key.encode()
            if value is None:
                self.writes.delete(stored)
            else:
                self.writes.put(stored, orjson.dumps(value))
        self.parts += 1
        self.size += len(record)
        if self.parts < part["parts"]:
            return False
        first_snapshot = self.snapshot_first and self.applied == 0
        self.store.write_position(self.writes, offset, self.broker, topic=self.topic, written=self.size,
                                  snapshot_bytes=self.size if first_snapshot else None)
        self.store.db.write(self.writes)
        for view in self.store.views.values():   # what a view cached may be older than what was replayed
            view.cache.clear()
        self.complete = self.complete or self.batch_id.startswith(GENERATION_COMPLETE)
        self.batch_id, self.parts, self.size, self.writes = None, 0, 0, None
        self.applied += 1
        return True
