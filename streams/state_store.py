"""The resolution state: a local RocksDB (rocksdict) under data_dir/state, changed once per batch, with
each batch's change also written as one delta to a changelog topic.

Why not Faust tables: a table write is one changelog record per key (700-900 us an event here), their
RocksDB store needs a current event for every write (our writes happen once per batch, outside any
event), and memory tables replay whole changelogs at every start (minutes on the disk-backed broker).

Commit order for one batch (streams/app.py):
1. resolve the batch against views of this store (reads hit RocksDB, writes wait in the views);
2. publish the batch's delta to the changelog and wait for the broker's ack;
3. write the delta and the changelog offset it ends at to RocksDB in one atomic WriteBatch;
4. publish the batch's outputs, wait for their acks; only then Faust commits the input offsets.
A worker killed anywhere resumes with state that matches its committed offsets or is ahead of them;
events redelivered after a state ahead of them are known (the events view) and re-published as first
published. A fresh machine (no local RocksDB) rebuilds the state from the changelog; a restarted worker
only reads the changelog written after the offset its RocksDB holds.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, MutableMapping

import orjson
from rocksdict import Options, Rdict, WriteBatch

log = logging.getLogger(__name__)

VIEWS = ("owners", "clusters", "aliases", "sightings", "events", "meta", "profiles")
CHANGELOG_OFFSET = b"\x00changelog-offset"
CHANGELOG_BROKER = b"\x00changelog-broker"
MAX_DELTA_BYTES = 512 * 1024  # one changelog record at most; a larger delta is split in parts
CACHE_MAX_KEYS = 300_000      # decoded values kept per view (then the cache starts over)
_DELETED = object()
_ABSENT = object()


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


class StateView(MutableMapping):
    """One named mapping of the store; writes wait in `pending` until the batch is committed. Decoded
    values (and misses) are cached: this process is the state's only writer, so the cache stays true."""

    def __init__(self, db: Rdict, name: str):
        self.db = db
        self.prefix = name.encode() + b"\x00"
        self.pending: dict[str, Any] = {}
        self.cache: dict[str, Any] = {}

    def _key(self, key: str) -> bytes:
        return self.prefix + key.encode()

    def __getitem__(self, key: str) -> Any:
        if key in self.pending:
            value = self.pending[key]
        else:
            value = self.cache.get(key, None)
            if value is None:
                raw = self.db.get(self._key(key))
                value = _ABSENT if raw is None else orjson.loads(raw)
                self.remember(key, value)
        if value is None or value is _DELETED or value is _ABSENT:
            raise KeyError(key)
        return value

    def remember(self, key: str, value: Any) -> None:
        if len(self.cache) >= CACHE_MAX_KEYS:
            self.cache.clear()
        self.cache[key] = _ABSENT if value is None else value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: str, value: Any) -> None:
        self.pending[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.pending[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        """Committed keys (the batch's pending writes are not listed): for timers and tests, not the hot path."""
        for raw_key in self.db.keys(from_key=self.prefix):
            if not raw_key.startswith(self.prefix):
                return
            yield raw_key[len(self.prefix):].decode()

    def values(self):  # type: ignore[override]
        for raw_key, raw in self.db.items(from_key=self.prefix):
            if not raw_key.startswith(self.prefix):
                return
            yield orjson.loads(raw)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class StateStore:
    def __init__(self, path: Path):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        self.db = Rdict(str(path), options)
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

    def take_delta(self) -> dict[str, dict[str, Any]]:
        """The batch's changes ({view: {key: value or None for deleted}}), emptied from the views."""
        delta = {}
        for name, view in self.views.items():
            if view.pending:
                delta[name] = {key: None if value is _DELETED else value for key, value in view.pending.items()}
                view.pending.clear()
        return delta

    def apply(self, delta: dict[str, dict[str, Any]], changelog_offset: int | None, broker: str | None = None) -> None:
        """Write a delta (and where the changelog stands) in one atomic write."""
        batch = WriteBatch(raw_mode=True)
        for name, changes in delta.items():
            prefix = name.encode() + b"\x00"
            view = self.views.get(name)
            for key, value in changes.items():
                if value is None:
                    batch.delete(prefix + key.encode())
                else:
                    batch.put(prefix + key.encode(), _dumps(value))
                if view is not None:
                    view.remember(key, value)
        if changelog_offset is not None:
            batch.put(CHANGELOG_OFFSET, str(changelog_offset).encode())
        if broker is not None:
            batch.put(CHANGELOG_BROKER, broker.encode())
        self.db.write(batch)


def delta_records(delta: dict[str, dict[str, Any]], batch_id: str) -> list[bytes]:
    """The changelog records of one delta: parts of at most about MAX_DELTA_BYTES, each naming its batch
    and how many parts it has, so recovery applies a batch only when all its parts arrived."""
    items = [(name, key, value) for name, changes in delta.items() for key, value in changes.items()]
    parts: list[list] = [[]]
    size = 0
    for item in items:
        item_size = len(_dumps(item))
        if parts[-1] and size + item_size > MAX_DELTA_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += item_size
    return [_dumps({"batch": batch_id, "part": i, "parts": len(parts), "changes": part}) for i, part in enumerate(parts)]


class DeltaAssembler:
    """Recovery: feed changelog records in order; complete batches come out as deltas."""

    def __init__(self):
        self.batch_id: str | None = None
        self.parts: list[list] = []

    def add(self, record: bytes) -> dict[str, dict[str, Any]] | None:
        part = orjson.loads(record)
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
