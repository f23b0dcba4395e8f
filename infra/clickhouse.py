"""ClickHouse clients: the same clickhouse-connect client for embedded chDB and for a server.

Embedded chDB allows one data folder per process, and one process per folder: the process that
owns it (the hub) answers everyone else's queries over HTTP (sinks/query_server.py).
"""
from __future__ import annotations

import threading
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver import options
from clickhouse_connect.driver.client import Client

from infra.settings import Settings


def _dsn(settings: Settings) -> str:
    if settings.clickhouse.url:
        return settings.clickhouse.url
    return "chdb://" + str(Path(settings.clickhouse.embedded_path).resolve())


def open_client(settings: Settings, create_database: bool = True) -> Client:
    """A client whose default database is settings.clickhouse.database (created if asked)."""
    dsn = _dsn(settings)
    if dsn.startswith("chdb://"):
        Path(dsn[len("chdb://"):]).mkdir(parents=True, exist_ok=True)
    database = settings.clickhouse.database
    if create_database:
        bootstrap = clickhouse_connect.get_client(dsn=dsn)
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    # clickhouse-connect imports pandas at its first insert, to ask whether the rows are a DataFrame: 0.4 s
    # here, and seconds while a load keeps the cores busy, by which the first batch came late. Now, at the start.
    options.pd  # noqa: B018
    return clickhouse_connect.get_client(dsn=dsn, database=database)


class LockedClient:
    """Serialises calls: the sink and the query endpoint share one client from several threads."""

    def __init__(self, client: Client):
        self.client = client
        self._lock = threading.Lock()

    def query(self, *args, **kwargs):
        with self._lock:
            return self.client.query(*args, **kwargs)

    def command(self, *args, **kwargs):
        with self._lock:
            return self.client.command(*args, **kwargs)

    def insert(self, *args, **kwargs):
        with self._lock:
            return self.client.insert(*args, **kwargs)
