"""A write-back view of a Faust table for the length of one batch.

Each assignment to a Faust table sends a changelog record. Resolution touches the same keys many
times in a batch (a customer's cluster and profile, the sequence counter), so writes are kept here
and only the last value of each key is written to the table when the batch ends, before its output
and changelog are flushed and the batch is acked.
"""
from __future__ import annotations

from typing import Any, Iterator, MutableMapping

_DELETED = object()


class BatchState(MutableMapping):
    def __init__(self, table: MutableMapping):
        self.table = table
        self.pending: dict[Any, Any] = {}

    def __getitem__(self, key: Any) -> Any:
        value = self.pending.get(key, None) if key in self.pending else self.table.get(key)
        if value is None or value is _DELETED:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: Any, value: Any) -> None:
        self.pending[key] = value

    def __delitem__(self, key: Any) -> None:
        if key not in self:
            raise KeyError(key)
        self.pending[key] = _DELETED

    def __iter__(self) -> Iterator:
        raise TypeError("iterate the table itself; a batch view only knows the keys it touched")

    def __len__(self) -> int:
        raise TypeError("ask the table itself")

    def flush(self) -> int:
        """Write the batch's last value of each key to the table; returns how many keys were written."""
        for key, value in self.pending.items():
            if value is _DELETED:
                if key in self.table:
                    del self.table[key]
            else:
                self.table[key] = value
        written = len(self.pending)
        self.pending.clear()
        return written
