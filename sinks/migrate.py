"""Versioned DDL: sinks/sql/NNNN_name.sql applied in order, each once, recorded in schema_migrations."""
from __future__ import annotations

import re
from importlib import resources

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in (resources.files("sinks") / "sql").iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


def statements(sql: str) -> list[str]:
    """Split a file on semicolons that end a line; comments-only chunks are dropped."""
    chunks = re.split(r";\s*(?:\n|$)", sql)
    kept = []
    for chunk in chunks:
        body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
        if body:
            kept.append(body)
    return kept


def migrate(client) -> list[str]:
    """Apply pending migrations; returns the names applied. Safe to run any number of times."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime DEFAULT now())"
        " ENGINE = MergeTree ORDER BY version"
    )
    applied = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    done = []
    for version, name, sql in migration_files():
        if version in applied:
            continue
        for statement in statements(sql):
            client.command(statement)
        client.insert("schema_migrations", [(version, name)], column_names=["version", "name"])
        done.append(f"{version:04d}_{name}")
    return done


def role_statements(database: str) -> list[str]:
    """sinks/sql/access/roles.sql for one database: a role per department and its grants."""
    sql = (resources.files("sinks") / "sql" / "access" / "roles.sql").read_text()
    return statements(sql.replace("{database}", database))
