"""Named queries: the .sql files in sinks/sql/queries, by file name without .sql."""
from __future__ import annotations

import re
from importlib import resources

PLACEHOLDER = re.compile(r"\{(\w+):[^}]+\}")


def named_query(name: str) -> str:
    path = resources.files("sinks") / "sql" / "queries" / f"{name}.sql"
    if not path.is_file():
        raise KeyError(f"no named query {name!r} in sinks/sql/queries")
    return path.read_text()


def stored_counts(client) -> tuple[int, int]:
    """(timeline events, dead letters), each event counted once."""
    timeline, dead = client.query(named_query("stored_counts")).result_rows[0]
    return timeline, dead


def query_names() -> list[str]:
    return sorted(p.name[:-4] for p in (resources.files("sinks") / "sql" / "queries").iterdir() if p.name.endswith(".sql"))


def query_title(name: str) -> str:
    """The query's first comment line: what it answers."""
    first = named_query(name).splitlines()[0]
    return first.lstrip("- ").strip() if first.startswith("--") else ""


def query_parameters(name: str) -> set[str]:
    return set(PLACEHOLDER.findall(named_query(name)))
