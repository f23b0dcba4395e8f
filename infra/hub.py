"""Runs the hub on one machine: the embedded broker (unless bootstrap servers are set), the topics,
the ClickHouse schema, a Faust worker process, the sink, and (embedded ClickHouse) the query endpoint.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from infra.broker import EmbeddedBroker
from infra.clickhouse import LockedClient, open_client
from infra.kafka import ensure_topics
from infra.processes import stop_process
from infra.settings import Settings
from sinks.clickhouse_sink import ClickHouseSink
from sinks.migrate import migrate
from sinks.query_server import QueryServer

log = logging.getLogger(__name__)


def child_environment(settings: Settings, bootstrap: str) -> dict[str, str]:
    """The environment that gives a child process exactly these settings, the broker address included."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMNIHUB_")}
    data = json.loads(settings.model_dump_json())
    data["kafka"]["bootstrap_servers"] = bootstrap
    for section, value in data.items():
        env[f"OMNIHUB_{section.upper()}"] = json.dumps(value) if isinstance(value, dict) else str(value)
    return env


class WorkerProcess:
    """One Faust worker in its own process (`omnihub worker`), logging to data_dir/logs/worker.log."""

    def __init__(self, settings: Settings, bootstrap: str):
        self.settings = settings
        self.bootstrap = bootstrap
        self.log_file = Path(settings.data_dir) / "logs" / "worker.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log_handle:
            self.process = subprocess.Popen([sys.executable, "-m", "infra.cli", "worker"], stdout=log_handle,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=child_environment(self.settings, self.bootstrap))
        return self

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to Kafka and to the tables."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, grace: float = 20.0) -> None:
        stop_process(self.process, grace, "Faust worker")


def channel_topics(settings: Settings) -> list[str]:
    """The bundled connectors' topics that the channel pattern selects: created before the Faust
    worker starts, since it subscribes to the channel topics that exist when it starts."""
    import re

    from connectors.config import bundled_configs, load_connector_config

    topics = [load_connector_config(path).topic for path in bundled_configs()]
    return [topic for topic in topics if re.search(settings.topics.channel_pattern, topic)]


class Hub:
    def __init__(self, settings: Settings, start_worker: bool = True, serve_queries: bool = True):
        self.settings = settings
        self.start_worker = start_worker
        self.serve_queries = serve_queries and settings.embedded_clickhouse
        self.broker: EmbeddedBroker | None = None
        self.worker: WorkerProcess | None = None
        self.query_server: QueryServer | None = None
        self.client: LockedClient | None = None
        self.sink: ClickHouseSink | None = None
        self._stop = asyncio.Event()
        self._sink_task: asyncio.Task | None = None

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers if self.broker else self.settings.kafka.bootstrap_servers

    async def start(self) -> "Hub":
        s = self.settings
        if s.embedded_kafka:
            self.broker = EmbeddedBroker(Path(s.data_dir) / "logs", s.kafka.embedded_storage)
            await asyncio.to_thread(self.broker.start)
        await asyncio.to_thread(ensure_topics, self.bootstrap, s.topics.all_names() + channel_topics(s),
                                s.topics.partitions, s.topics.replication_factor, (s.topics.customer_profiles,))
        self.client = LockedClient(await asyncio.to_thread(open_client, s))
        applied = await asyncio.to_thread(migrate, self.client)
        if applied:
            log.info("applied ClickHouse migrations %s", applied)
        if self.serve_queries:
            self.query_server = QueryServer(self.client, s.clickhouse.query_host, s.clickhouse.query_port).start()
            log.info("answering queries for embedded ClickHouse at %s", self.query_server.address)
        if self.start_worker:
            self.worker = WorkerProcess(s, self.bootstrap).start()
        self.sink = ClickHouseSink(s, self.bootstrap, self.client)
        sink_ready = asyncio.Event()
        self._sink_task = asyncio.create_task(self.sink.run(self._stop, sink_ready))
        ready_wait = asyncio.create_task(sink_ready.wait())
        await asyncio.wait([self._sink_task, ready_wait], return_when=asyncio.FIRST_COMPLETED)
        ready_wait.cancel()
        if self._sink_task.done():
            self._sink_task.result()  # raises the sink's start-up error
        return self

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the hub is asked to stop: long-running tasks beside it (webhooks, followed files) end too."""
        return self._stop

    async def wait(self) -> None:
        await self._sink_task

    def request_stop(self) -> None:
        """Signal-handler safe: the sink finishes its batch, then wait() returns."""
        self._stop.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._sink_task is not None:
            try:
                await self._sink_task
            except Exception as error:
                log.error("sink stopped with an error: %s", error)
        if self.worker:
            await asyncio.to_thread(self.worker.stop)
        if self.query_server:
            self.query_server.stop()
        if self.broker:
            await asyncio.to_thread(self.broker.stop)

    async def __aenter__(self) -> "Hub":
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
