"""Named queries: the .sql files in sinks/sql/queries, by file name without .sql."""
from __future__ import annotations

from importlib import resources


def named_query(name: str) -> str:
    path = resources.files("sinks") / "sql" / "queries" / f"{name}.sql"
    if not path.is_file():
        raise KeyError(f"no named query {name!r} in sinks/sql/queries")
    return path.read_text()


def stored_counts(client) -> tuple[int, int]:
    """(timeline events, dead letters), each event counted once."""
    timeline, dead = client.query(named_query("stored_counts")).result_rows[0]
    return timeline, dead
