"""Fixtures: real servers, never mocks.

With a reachable Docker engine, testcontainers starts Kafka and ClickHouse; otherwise the embedded
tansu broker and the chDB engine are used. Set OMNIHUB_TEST_BACKEND=embedded|containers to force one.
Each test gets its own topics, consumer groups and ClickHouse database, so tests share servers safely.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker
from infra.compose import service_image
from infra.settings import Settings, load_settings


def _docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def backend() -> str:
    forced = os.environ.get("OMNIHUB_TEST_BACKEND")
    if forced:
        return forced
    return "containers" if _docker_reachable() else "embedded"


@pytest.fixture(scope="session")
def kafka_bootstrap(backend: str, tmp_path_factory: pytest.TempPathFactory):
    if backend == "containers":
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer(service_image("kafka")) as kafka:   # the images infra/compose.yaml runs
            yield kafka.get_bootstrap_server()
    else:
        with EmbeddedBroker(tmp_path_factory.mktemp("tansu")) as broker:
            yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def clickhouse_location(backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Settings for the [clickhouse] section: a server URL, or the one chDB folder of this process."""
    if backend == "containers":
        from testcontainers.community.clickhouse import ClickHouseContainer

        container = ClickHouseContainer(service_image("clickhouse"))  # exposes the HTTP port 8123 that clickhouse-connect uses
        container.start()
        try:
            host, port = container.get_container_host_ip(), container.get_exposed_port(8123)
            yield {"url": f"http://{container.username}:{container.password}@{host}:{port}/"}
        finally:
            container.stop()
    else:
        # chDB allows one folder per process: every test shares it, each with its own database.
        yield {"embedded_path": tmp_path_factory.mktemp("chdb")}


@pytest.fixture
def settings(kafka_bootstrap: str, clickhouse_location: dict, tmp_path: Path) -> Settings:
    return isolated_settings(kafka_bootstrap, clickhouse_location, tmp_path)


def isolated_settings(kafka_bootstrap: str, clickhouse_location: dict, data_dir: Path) -> Settings:
    """Settings of their own topics, groups and ClickHouse database, on the shared servers."""
    suffix = uuid.uuid4().hex[:8]
    return load_settings(
        None,
        data_dir=data_dir,
        kafka={"bootstrap_servers": kafka_bootstrap},
        clickhouse={**clickhouse_location, "database": f"test_{suffix}", "query_port": 0},
        topics={"channel_pattern": rf"^ch-{suffix}\.", "customer_timeline": f"timeline-{suffix}",
                "customer_profiles": f"profiles-{suffix}", "identity_merges": f"merges-{suffix}",
                "identity_warnings": f"warnings-{suffix}", "identity_commands": f"commands-{suffix}",
                "campaigns": f"campaigns-{suffix}", "customer_erasures": f"erasures-{suffix}",
                "dead_letters": f"dead-letters-{suffix}", "partitions": 2},
        streams={"app_id": f"omnihub-test-{suffix}"},
        sink={"group_id": f"sink-{suffix}", "batch_max_seconds": 0.3},
        console={"port": 0},
    )


@pytest.fixture(scope="module")
def loaded_hub(kafka_bootstrap: str, clickhouse_location: dict, tmp_path_factory: pytest.TempPathFactory):
    """A hub running with the generated promotion loaded (tests/console_hub.py), its state file written as
    `omnihub run` writes it, so the CLI in the test's process finds it."""
    from infra.hub import write_state_file
    from tests.console_hub import start_loaded_hub, stop_hub

    directory = tmp_path_factory.mktemp("loaded-hub")
    running = start_loaded_hub(isolated_settings(kafka_bootstrap, clickhouse_location, directory), directory)
    write_state_file(Path(running.settings.data_dir) / "hub.json", running.hub.status())
    yield running
    stop_hub(running)
