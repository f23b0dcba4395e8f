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
import time
from pathlib import Path

from infra.broker import START_ATTEMPTS, BrokerError, EmbeddedBroker, wait_for_line, wait_until_ready
from infra.clickhouse import LockedClient, open_client
from infra.kafka import broker_id, ensure_topics
from infra.processes import pid_alive, spawn, stop_process, tune_collector
from infra.settings import Settings
from infra.supervision import ChildKeepsFailing, ChildState, ProcessChild, RestartPolicy, Supervisor, next_delay
from sinks.clickhouse_sink import ClickHouseSink
from sinks.migrate import migrate
from sinks.rollups import check_rollups
from sinks.query_server import QueryServer
from sinks.read_only import run_read_only

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
        # Its own session, as the broker's: a terminal's Ctrl-C stays away (the hub stops it in order), and on
        # Linux, which schedules each session as one group (autogroup), the worker gets a fair share of the CPU
        # as a group instead of one thread's among the connectors' and the sink's. It is the one stage that
        # cannot spread over cores (one writer of the graph, one GIL): with it in the hub's group, a load
        # starved it while the connectors ran, and it resolved the backlog alone after them, one core idle
        # (bench_end_to_end.py prints the cores busy until the connectors are done and after).
        self.process = spawn([sys.executable, "-m", "infra.cli", "worker"], self.log_file,
                             env=child_environment(self.settings, self.bootstrap), new_session=True)
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
    """The hub's children, started in flow order and supervised (infra/supervision.py): the embedded
    broker (and its object store), a Faust worker process, the sink, and the query endpoint."""

    def __init__(self, settings: Settings, start_worker: bool = True, serve_queries: bool = True,
                 policy: RestartPolicy | None = None, state_file: Path | None = None):
        self.settings = settings
        self.start_worker = start_worker
        self.serve_queries = serve_queries and settings.embedded_clickhouse
        self.policy = policy or RestartPolicy()
        self.state_file = state_file
        self.supervisor = Supervisor(self.policy)
        self.broker: EmbeddedBroker | None = None
        self.broker_id = ""
        self.worker: WorkerProcess | None = None
        self.query_server: QueryServer | None = None
        self.console = None  # console.server.ConsoleServer
        self.client: LockedClient | None = None
        self.sink: ClickHouseSink | None = None
        self.sink_state = ChildState("sink")
        self.failure: ChildKeepsFailing | None = None
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._sink_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self._state_task: asyncio.Task | None = None

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers if self.broker else self.settings.kafka.bootstrap_servers

    async def _prepare_broker(self) -> None:
        """Topics exist before anything produces or consumes (tansu would auto-create them with its own
        partition count), and the broker's data is named (infra.kafka.broker_id)."""
        s = self.settings
        await asyncio.to_thread(ensure_topics, self.bootstrap, s.topics.all_names() + channel_topics(s),
                                s.topics.partitions, s.topics.replication_factor, (s.topics.customer_profiles,))
        previous, self.broker_id = self.broker_id, await asyncio.to_thread(broker_id, self.bootstrap)
        if previous and previous != self.broker_id:
            log.error("the broker came back without its data (storage %s): broker id %s is now %s; connectors "
                      "will read their files again from the start", s.kafka.embedded_storage, previous, self.broker_id)

    def _supervise_broker(self) -> None:
        broker = self.broker

        async def store_ready() -> None:
            await asyncio.to_thread(wait_for_line, broker.store, broker.store_log, "object store listening", 30.0)

        async def broker_ready() -> None:
            await asyncio.to_thread(wait_until_ready, broker.bootstrap_servers, 30.0, broker.process, broker.log_file)
            await self._prepare_broker()

        if broker.store is not None:
            self.supervisor.adopt(ProcessChild(ChildState("object-store"), broker.launch_store,
                                               broker.store_log, store_ready, broker.store))
        self.supervisor.adopt(ProcessChild(ChildState("broker"), broker.launch_broker,
                                           broker.log_file, broker_ready, broker.process))

    async def start(self) -> "Hub":
        s = self.settings
        if s.embedded_kafka:
            self.broker = EmbeddedBroker(Path(s.data_dir) / "logs", s.kafka.embedded_storage,
                                         disk_dir=Path(s.data_dir) / "broker")
            for attempt in range(1, START_ATTEMPTS + 1):
                self.broker.launch()  # from this (main) thread: the processes die with it
                try:
                    await asyncio.to_thread(self.broker.wait_ready)
                    break
                except BrokerError as error:
                    self.broker.after_failed_start(error, attempt)   # raises unless a port was taken meanwhile
            self._supervise_broker()
        await self._prepare_broker()
        self.client = LockedClient(await asyncio.to_thread(open_client, s))
        applied = await asyncio.to_thread(migrate, self.client)
        if applied:
            log.info("applied ClickHouse migrations %s", applied)
        await asyncio.to_thread(check_rollups, self.client)  # before the sink writes: a kill may have cut them short
        if self.serve_queries:
            self.query_server = QueryServer(s, s.clickhouse.query_host, s.clickhouse.query_port).start()
            log.info("answering queries for embedded ClickHouse at %s", self.query_server.address)
        if s.console.enabled:
            self._start_console()
        if self.start_worker:
            self.worker = WorkerProcess(s, self.bootstrap).start()
            worker = self.worker
            self.supervisor.adopt(ProcessChild(ChildState("worker"), lambda: worker.start().process,
                                               worker.log_file, None, worker.process))
        self.sink = ClickHouseSink(s, self.bootstrap, self.client)
        sink_ready = asyncio.Event()
        self._sink_task = asyncio.create_task(self._run_sink(sink_ready))
        ready_wait = asyncio.create_task(sink_ready.wait())
        await asyncio.wait([self._sink_task, ready_wait], return_when=asyncio.FIRST_COMPLETED)
        ready_wait.cancel()
        if self._sink_task.done():
            self._sink_task.result()  # raises the sink's start-up error
        self.sink_state.state = "running"
        self._watch_task = asyncio.create_task(self.supervisor.watch(self._stop))
        if self.state_file is not None:
            self._state_task = asyncio.create_task(self._write_state())
        return self

    def _start_console(self) -> None:
        """The web console at the end of the flow: it reads ClickHouse as analysts do, and sends splits to the
        worker as `omnihub identity split` does."""
        from console.server import ConsoleServer
        from infra.identity_commands import publish_command, split_command

        settings = console_settings(self.settings)

        def split(customer_id: str, identifiers: list[str], reason: str) -> str:
            publish_command(settings, self.bootstrap, split_command(settings, customer_id, identifiers, reason))
            return (f"Split sent: {len(identifiers)} identifier(s) move to a new customer; the result appears on "
                    f"{settings.topics.identity_merges} and here within seconds.")

        self.console = ConsoleServer(settings, lambda sql, parameters: run_read_only(settings, sql, parameters),
                                     split).start()
        log.info("web console at %s (customer service token in %s)", self.console.address,
                 Path(settings.data_dir) / SERVICE_TOKEN_FILE if "service" not in self.settings.console.tokens
                 else "console.tokens")

    async def _run_sink(self, ready: asyncio.Event) -> None:
        """The sink, restarted with backoff when it fails after its start (a lost broker, say)."""
        while True:
            try:
                await self.sink.run(self._stop, ready)
                self.sink_state.state = "stopped"
                return
            except Exception as error:
                if not ready.is_set():
                    raise  # never started: a configuration problem, not a crash
                delay = next_delay(self.sink_state, self.policy, f"{type(error).__name__}: {error}")
                log.error("sink stopped: %s: %s; restarting in %.0f s", type(error).__name__, error, delay)
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return
            except asyncio.TimeoutError:
                self.sink_state.state = "running"

    def status(self) -> dict:
        """What `omnihub status` shows: each component, as the supervisor sees it."""
        components = [child.state.as_dict() for child in self.supervisor.children]
        stats = self.sink.stats if self.sink else None
        sink = self.sink_state.as_dict()
        if stats is not None:
            sink.update(records_read=stats.records_read, records_refused=stats.records_refused,
                        insert_failures=stats.insert_failures, last_error=sink["last_error"] or stats.last_error or "")
        return {"pid": os.getpid(), "started_at": self.started_at, "updated_at": time.time(),
                "bootstrap_servers": self.bootstrap, "broker_id": self.broker_id,
                "storage": self.settings.kafka.embedded_storage if self.broker else "external",
                "query_url": self.query_server.address if self.query_server else None,
                "console_url": self.console.address if self.console else None,
                "data_dir": str(Path(self.settings.data_dir).resolve()),
                "components": components + [sink]}

    async def _write_state(self, every: float = 2.0) -> None:
        while not self._stop.is_set():
            write_state_file(self.state_file, self.status())
            try:
                await asyncio.wait_for(self._stop.wait(), every)
            except asyncio.TimeoutError:
                pass

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the hub is asked to stop: long-running tasks beside it (webhooks, followed files) end too."""
        return self._stop

    async def wait(self) -> None:
        """Until the hub is asked to stop, or a child keeps failing (then ChildKeepsFailing)."""
        done, _ = await asyncio.wait([self._sink_task, self._watch_task], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if (error := task.exception()) is not None:
                self.failure = error if isinstance(error, ChildKeepsFailing) else None
                self._stop.set()
                raise error
        await self._sink_task

    def request_stop(self) -> None:
        """Signal-handler safe: the sink finishes its batch, then wait() returns."""
        self._stop.set()

    async def stop(self) -> None:
        self._stop.set()
        for task in (self._watch_task, self._state_task):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        if self._sink_task is not None:
            try:
                await self._sink_task
            except Exception as error:
                log.error("sink stopped with an error: %s", error)
        if self.worker:
            await asyncio.to_thread(self.worker.stop)
        if self.query_server:
            self.query_server.stop()
        if self.console:
            self.console.stop()
        if self.broker:
            await asyncio.to_thread(self.broker.stop)
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)

    async def __aenter__(self) -> "Hub":
        tune_collector()   # the sink makes rows for every event in this process
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


SERVICE_TOKEN_FILE = "console-service-token"


def console_settings(settings: Settings) -> Settings:
    """The settings with a customer service token: the configured one, else one kept in the data folder
    (made on first start, readable by its owner only), since the service pages show personal data."""
    if "service" in settings.console.tokens:
        return settings
    path = Path(settings.data_dir) / SERVICE_TOKEN_FILE
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    tokens = {**settings.console.tokens, "service": path.read_text().strip()}
    return settings.model_copy(update={"console": settings.console.model_copy(update={"tokens": tokens})})


def write_state_file(path: Path, state: dict) -> None:
    """Replaced atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)


def read_state_file(path: Path) -> dict:
    """The running hub's state, {} if none; HubStateStale if the file names a hub that is not running."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise HubStateStale(f"{path} is not valid JSON: remove it and start `omnihub run`") from None
    pid = state.get("pid")
    if pid is None or not pid_alive(int(pid)):
        raise HubStateStale(f"{path} names a hub (pid {pid}) that is not running: it stopped without cleaning up "
                            "(killed?); start `omnihub run` again")
    return state


class HubStateStale(RuntimeError):
    pass
