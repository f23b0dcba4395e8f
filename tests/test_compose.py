"""infra/compose.yaml, checked without Docker: the hub it describes reaches its Kafka and ClickHouse through
settings that exist, and the tests' testcontainers path starts the images it names."""
import os

import pytest
import yaml

from infra.compose import COMPOSE_FILE, service_image
from infra.settings import load_settings


@pytest.fixture
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_the_hub_reaches_the_compose_servers_by_its_environment_alone(compose, monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("OMNIHUB_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)   # no stray ./omnihub.toml
    hub = compose["services"]["hub"]
    for key, value in hub["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()
    # Every variable the compose file sets is a setting the hub reads (a misspelt one would be ignored silently).
    for key, value in hub["environment"].items():
        section, name = key.removeprefix("OMNIHUB_").lower().split("__")
        assert str(getattr(getattr(settings, section), name)) == str(value), key
    assert not settings.embedded_kafka and not settings.embedded_clickhouse
    assert set(hub["depends_on"]) == {"kafka", "clickhouse"}


def test_testcontainers_start_the_images_the_compose_file_names(compose, tmp_path):
    assert service_image("kafka") == compose["services"]["kafka"]["image"]
    assert service_image("clickhouse") == compose["services"]["clickhouse"]["image"]
    assert not service_image("clickhouse").endswith(":latest")   # a pinned version, as the compose file runs
    other = tmp_path / "compose.yaml"
    other.write_text("services:\n  clickhouse:\n    image: clickhouse/clickhouse-server:25.3\n")
    assert service_image("clickhouse", other) == "clickhouse/clickhouse-server:25.3"
    with pytest.raises(KeyError, match="no image for a service named 'kafka'"):
        service_image("kafka", other)
