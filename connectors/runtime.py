"""Connector runtime: a file source read line by line, each line validated and published.

Every line read ends up on the channel topic or in dead letters with its reason and position;
a run reports read = accepted + rejected. A line counts as accepted only once the broker has
acknowledged it (acks=all).
"""
from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra.kafka import producer_config
from infra.settings import Settings
from schemas import models
from schemas.serde import AvroCodec, codec

log = logging.getLogger(__name__)

# How many sends may be in flight before the runtime waits for acknowledgements.
IN_FLIGHT = 5000


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(pattern="^jsonl$")
    path: Path


class ConnectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    channel: str
    schema_name: str = Field(alias="schema")
    topic: str
    model: str
    key_field: str
    source: SourceConfig


def load_connector_config(path: str | Path) -> tuple[ConnectorConfig, Path]:
    path = Path(path)
    try:
        config = ConnectorConfig.model_validate(tomllib.loads(path.read_text()))
    except (ValidationError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"connector config {path}: {error}") from None
    return config, path.parent


def bundled_config(name: str) -> Path:
    return Path(str(resources.files("connectors") / f"{name}.toml"))


@dataclass
class RunReport:
    connector: str
    source: str
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.read == self.accepted + self.rejected

    def summary(self) -> str:
        return (f"{self.connector}: read {self.read} = accepted {self.accepted} + rejected {self.rejected}"
                f" ({'reconciled' if self.reconciles else 'DOES NOT RECONCILE'}) from {self.source}")

    def describe(self) -> str:
        """The summary, then one line per distinct rejection reason."""
        return "\n".join([self.summary()] + [f"  rejected x{n}: {reason}" for reason, n in self.reasons.items()])


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in error.errors())
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON: {error.msg} (column {error.colno})"
    return str(error)


class FileConnector:
    def __init__(self, settings: Settings, bootstrap: str, config: ConnectorConfig, base_dir: Path):
        self.settings = settings
        self.bootstrap = bootstrap
        self.config = config
        self.model = getattr(models, config.model)
        self.topic = getattr(settings.topics, config.topic)
        self.codec: AvroCodec = codec(config.schema_name, settings.schemas.registry_url, self.topic)
        self.dead_letters = codec("dead_letter", settings.schemas.registry_url, settings.topics.dead_letters)
        self.default_path = (base_dir / config.source.path).resolve()

    def parse(self, line: bytes) -> tuple[bytes, bytes]:
        """One raw line to (key, encoded value); raises with the reason on a bad record."""
        record = self.model.model_validate(json.loads(line))
        value = record.to_avro()
        return str(value[self.config.key_field]).encode(), self.codec.encode(value)

    def dead_letter(self, source: Path, line_number: int, error: str, raw: bytes) -> bytes:
        return self.dead_letters.encode(
            models.dead_letter(f"connector:{self.config.name}", str(source), f"line {line_number}", error, raw))

    async def run(self, path: Path | None = None) -> RunReport:
        source = Path(path).resolve() if path else self.default_path
        report = RunReport(self.config.name, str(source))
        producer = AIOKafkaProducer(**producer_config(self.settings, self.bootstrap))
        await producer.start()
        pending: list[tuple[asyncio.Future, bool]] = []

        async def settle() -> None:
            # Count only what the broker acknowledged; a failed send raises and stops the run loudly.
            for future, accepted in pending:
                await future
                if accepted:
                    report.accepted += 1
                else:
                    report.rejected += 1
            pending.clear()

        try:
            with source.open("rb") as lines:
                for line_number, raw in enumerate(lines, start=1):
                    raw = raw.rstrip(b"\r\n")
                    if not raw.strip():
                        continue  # blank lines are layout, not records
                    report.read += 1
                    try:
                        key, value = self.parse(raw)
                        pending.append((await producer.send(self.topic, value, key=key), True))
                    except Exception as error:  # any bad record goes to dead letters, never crashes the run
                        reason = _reason(error)
                        report.reasons[reason] = report.reasons.get(reason, 0) + 1
                        letter = self.dead_letter(source, line_number, reason, raw)
                        pending.append((await producer.send(self.settings.topics.dead_letters, letter), False))
                    if len(pending) >= IN_FLIGHT:
                        await settle()
                await settle()
        finally:
            await producer.stop()
        log.info(report.summary())
        return report


async def run_connector(settings: Settings, bootstrap: str, config_path: str | Path, source: Path | None = None) -> RunReport:
    config, base_dir = load_connector_config(config_path)
    return await FileConnector(settings, bootstrap, config, base_dir).run(source)
