"""Test inputs: web-shop export lines (the format of connectors/channels/web-orders.yaml) and per-test connector configs."""
from __future__ import annotations

import json
import socket
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path


def web_order(i: int) -> dict:
    created = datetime(2026, 11, 20, 9, 0, tzinfo=timezone(timedelta(hours=1))) + timedelta(seconds=i)
    price_cents = 1000 + (i * 37) % 50000
    return {
        "order_id": f"W-{i:08d}",
        "created_at": created.isoformat(),
        "customer": {"account_id": f"A-{i % 997}", "email": f"customer{i % 997}@example.com"},
        "currency": "EUR",
        "lines": [{"sku": f"SKU-{i % 50}", "qty": 1 + i % 3, "unit_price": f"{price_cents / 100:.2f}"}],
        "shipping_cost": "4.90",
        "total": f"{(price_cents * (1 + i % 3) + 490) / 100:.2f}",
    }


def write_web_orders(path: Path, count: int, start: int = 0, malformed_lines: dict[int, str] | None = None) -> Path:
    """count valid orders; malformed_lines maps a 1-based line number to a raw bad line inserted there."""
    malformed_lines = malformed_lines or {}
    with Path(path).open("w") as out:
        line_number, written = 0, 0
        while written < count or (line_number + 1) in malformed_lines:
            line_number += 1
            if line_number in malformed_lines:
                out.write(malformed_lines[line_number] + "\n")
            else:
                out.write(json.dumps(web_order(start + written)) + "\n")
                written += 1
    return Path(path)


def channel_topic(settings, name: str) -> str:
    """The test's topic for a channel: matches the test's topics.channel_pattern (^ch-<suffix>\\.)."""
    return settings.topics.channel_pattern[1:].replace("\\.", ".") + name


def channel_config(settings, directory: Path, name: str, create_topics: bool = True, **source: object) -> Path:
    """A copy of a bundled connector config for one test: its own topic, absolute source paths,
    source settings overridden by keyword (e.g. port=0 for a webhook)."""
    import yaml

    from connectors.config import bundled_configs_dir
    from infra.kafka import ensure_topics

    bundled = bundled_configs_dir() / f"{name}.yaml"
    config = yaml.safe_load(bundled.read_text())
    config["topic"] = channel_topic(settings, name)
    for key in ("path", "sample"):
        if key in config["source"]:
            config["source"][key] = str((bundled.parent / config["source"][key]).resolve())
    config["source"].update(source)
    path = Path(directory) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    if create_topics:
        ensure_topics(settings.kafka.bootstrap_servers, [config["topic"], settings.topics.dead_letters],
                      settings.topics.partitions, settings.topics.replication_factor)
    return path


@contextmanager
def first_port_choice_taken(monkeypatch):
    """The embedded broker's first choice of a port is already listened on by another socket (as when another
    process takes a port between its choice and tansu's start); later choices are left free. Yields (the
    taken port, every choice made)."""
    from infra import broker as broker_module

    real_free_ports = broker_module.free_ports
    chosen: list[list[int]] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]

        def first_choice_taken(host, count):
            ports = real_free_ports(host, count)
            chosen.append(ports)
            return [busy] + ports[1:] if len(chosen) == 1 else ports

        monkeypatch.setattr(broker_module, "free_ports", first_choice_taken)
        yield busy, chosen
