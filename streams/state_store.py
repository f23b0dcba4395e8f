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
from pathlib import Path
from typing import Any, Iterator, MutableMapping

import lz4.frame
import orjson
from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch

log = logging.getLogger(__name__)

VIEWS = ("owners", "clusters", "aliases", "sightings", "events", "meta", "profiles", "sealed", "mentions")
CHANGELOG_OFFSET = b"\x00changelog-offset"
CHANGELOG_BROKER = b"\x00changelog-broker"
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
        items = [b"".join((b'["', name.encode(), b'",', orjson.dumps(key), b",", value or b"null", b"]"))
                 for name, key, value in self.encoded]
        parts: list[list[bytes]] = [[]]
        size = 0
        for item in items:
            if parts[-1] and size + len(item) > MAX_DELTA_BYTES:
                parts.append([])
                size = 0
            parts[-1].append(item)
            size += len(item) + 1
        head = orjson.dumps(batch_id)
        return [lz4.frame.compress(b"".join((b'{"batch":', head, b',"part":', str(i).encode(), b',"parts":',
                                             str(len(parts)).encode(), b',"changes":[', b",".join(part), b"]}")))
                for i, part in enumerate(parts)]


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
              broker: str | None = None) -> None:
        """Write a delta (and where the changelog stands) in one atomic write. Deltas taken from this store
        are applied in the order they were taken."""
        if not isinstance(delta, Delta):
            delta = Delta(delta)
        batch = WriteBatch(raw_mode=True)
        prefixes = {name: name.encode() + b"\x00" for name in delta.changes}
        for name, key, value in delta.encoded:
            if value is None:
                batch.delete(prefixes[name] + key.encode())
            else:
                batch.put(prefixes[name] + key.encode(), value)
        if changelog_offset is not None:
            batch.put(CHANGELOG_OFFSET, str(changelog_offset).encode())
        if broker is not None:
            batch.put(CHANGELOG_BROKER, broker.encode())
        self.db.write(batch)
        for name, changes in delta.changes.items():
            view = self.views.get(name)
            if view is not None:
                if view.in_flight and view.in_flight[0] is changes:
                    view.in_flight.pop(0)
                else:  # a delta from the changelog (recovery): what the cache held is stale
                    for key in changes:
                        view.cache.pop(key, None)


def delta_records(delta: dict[str, dict[str, Any]], batch_id: str) -> list[bytes]:
    return Delta(delta).records(batch_id)


class DeltaAssembler:
    """Recovery: feed changelog records in order; complete batches come out as deltas."""

    def __init__(self):
        self.batch_id: str | None = None
        self.parts: list[list] = []

    def add(self, record: bytes) -> dict[str, dict[str, Any]] | None:
        # records written before compression are plain JSON
        part = orjson.loads(lz4.frame.decompress(record) if record[:4] == LZ4_FRAME_MAGIC else record)
        if part["batch"] != self.batch_id or part["part"] != len(self.parts):
            # a new batch (an earlier one left incomplete by a crash is dropped: its events were redelivered)
            self.batch_id, self.parts = part["batch"], []
            if part["part"] != 0:
                return None
        self.parts.append(part["changes"])
        if len(self.parts) < part["parts"]:
            return None
        delta: dict[str, dict[str, Any]] = {}
        for changes in self.parts:
            for name, key, value in changes:
                delta.setdefault(name, {})[key] = value
        self.batch_id, self.parts = None, []
        return delta
