"""infra/compose.yaml read back: which server images a machine with Docker runs, so the tests' testcontainers
path (tests/conftest.py) starts the same Kafka and ClickHouse rather than testcontainers' defaults (its
ClickHouse default is `latest`, which would drift from the version the compose file names)."""
from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE_FILE = Path(__file__).with_name("compose.yaml")


def service_image(service: str, compose_file: Path = COMPOSE_FILE) -> str:
    """The image of one service of the compose file; KeyError naming the file when it has no such service."""
    services = yaml.safe_load(compose_file.read_text()).get("services") or {}
    if service not in services or not services[service].get("image"):
        raise KeyError(f"{compose_file} has no image for a service named {service!r} (it has: {', '.join(services)})")
    return services[service]["image"]
