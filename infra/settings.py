"""Settings: defaults < config file (TOML) < environment (OMNIHUB_*, nested with __).

Validated once at start; a wrong value stops the program with a message naming the setting.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

DEFAULT_CONFIG_FILE = "omnihub.toml"


class _Section(BaseModel):
    # A typo in a config key must be an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset means start the embedded tansu broker"
    )
    embedded_storage: str = Field(default="disk", description="disk: topics and committed offsets under "
                                  "data_dir/broker, kept across restarts and crashes; memory://tansu/: lost at every "
                                  "stop; s3://bucket/: an S3 server named by the AWS_* environment")
    session_timeout_ms: int = Field(default=6000, ge=1000, description="group session timeout (tansu joins take half of it)")
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    producer_linger_ms: int = Field(default=50, ge=0, description="how long a producer gathers records into one "
                                    "request: the embedded broker's disk stores one object per request, so fewer, "
                                    "larger requests cost it (and its readers) much less")
    producer_max_batch_bytes: int = Field(default=1_048_576, ge=1024)
    request_timeout_ms: int = Field(default=30_000, ge=1000)

    @property
    def consumer_request_timeout_ms(self) -> int:
        """A group join may legitimately take the whole session timeout: requests must outlast it."""
        return max(self.request_timeout_ms, self.session_timeout_ms + 5000)

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {server.strip()!r}")
        return value.strip()

    @field_validator("embedded_storage")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        if value != "disk" and not value.startswith(("memory://", "s3://")):
            raise ValueError("expected disk, memory://... or s3://... (the bundled tansu build has no other storage)")
        return value


class ClickHouseSettings(_Section):
    url: str | None = Field(
        default=None, description="http(s)://user:password@host:port/ of a ClickHouse server; unset means embedded chDB"
    )
    embedded_path: Path = Field(default=Path(".omnihub/chdb"), description="chDB data folder (one process owns it)")
    database: str = Field(default="omnihub", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    query_host: str = Field(default="127.0.0.1", description="embedded mode: where the owning process answers queries")
    query_port: int = Field(default=8124, ge=0, le=65535)
    query_token: str | None = Field(default=None, description="bearer token analysts' requests must carry; "
                                    "required when query_host is not a loopback address")
    query_max_seconds: int = Field(default=60, ge=1, description="an analyst's query is stopped after this long")
    query_max_memory_bytes: int = Field(default=4 * 1024**3, ge=1024**2)
    query_max_result_rows: int = Field(default=1_000_000, ge=1)
    query_max_threads: int = Field(default=1, ge=1, description="threads per analyst query: the other cores load")
    query_max_concurrent: int = Field(default=4, ge=1, description="analysts' queries running at once; more wait")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> "ClickHouseSettings":
        if self.query_host not in ("127.0.0.1", "localhost", "::1") and not self.query_token:
            raise ValueError(f"query_host {self.query_host!r} is reachable from other machines: set query_token too")
        return self

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("http://", "https://", "clickhouse://", "clickhouses://", "chdb://")):
            raise ValueError(f"expected an http(s):// or chdb:// address, got {value!r}")
        return value


class TopicSettings(_Section):
    channel_pattern: str = Field(default=r"^channel\.", description="regex of the channel topics streams/ reads; "
                                 "connectors name their topic channel.<name>, so a new channel needs no other setting")
    customer_timeline: str = "customer-timeline"
    customer_profiles: str = "customer-profiles"
    identity_merges: str = "identity-merges"
    identity_warnings: str = "identity-warnings"
    identity_commands: str = "identity-commands"
    campaigns: str = "campaigns"
    customer_erasures: str = "customer-erasures"
    dead_letters: str = "dead-letters"
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    def all_names(self) -> list[str]:
        return [self.customer_timeline, self.customer_profiles, self.identity_merges, self.identity_warnings,
                self.identity_commands, self.campaigns, self.customer_erasures, self.dead_letters]

    @field_validator("channel_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return value


class StreamSettings(_Section):
    app_id: str = "omnihub"
    # The state's changelog holds one delta per batch and grows with every batch ever resolved: a fresh machine
    # replays it all (about 12 MB a second here, bench_recovery.py). Once the generation the worker follows holds
    # changelog_compact_factor times the bytes of the state (its snapshot's, or RocksDB's estimate before the
    # first), and at least changelog_compact_min_bytes (about 20 s of replay), the worker writes the whole state
    # as a new generation and deletes the old one: a fresh machine replays at most about 1 + factor states.
    changelog_compact_factor: float = Field(default=3.0, gt=1)
    changelog_compact_min_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    # The snapshot is written at most this fast, so that the broker keeps room for the events resolved meanwhile:
    # at 10 MB/s the embedded broker and its object store took 31 to 51% of a core each while a 389 MB snapshot
    # went in (bench_recovery.py); unpaced it takes about 55 MB/s. A real Kafka cluster can take more. (Added for
    # a stall under load that turned out to be the best-customer timer's; not measured unpaced since.)
    changelog_snapshot_mb_per_second: float = Field(default=10.0, gt=0)


class IdentitySettings(_Section):
    default_region: str = Field(default="FR", pattern=r"^[A-Z]{2}$", description="phone numbers written without a country code are from here")
    phone_fallback_regions: list[str] = Field(
        default=["GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF"],
        description="where a number written without a country code and invalid for default_region is tried next "
                    "(France's overseas regions share its 0 trunk prefix); a number valid in exactly one is kept")
    blocked_values: list[str] = Field(default=["none@none.com", "noemail@noemail.com", "test@test.com", "anonymous", "null",
                                               "none", "n/a", "0000000000", "1234567890"],
                                      description="placeholders that never match (compared case-insensitively, raw and normalized)")
    shared_after: int = Field(default=3, ge=1, description="an identifier seen with more distinct customers than this "
                              "within shared_window_days is shared and stops matching")
    shared_window_days: int = Field(default=90, ge=1)
    max_identifiers: int = Field(default=50, ge=2, description="a merge may not give a customer more identifiers than this")
    mention_votes: int = Field(default=2, ge=0, description="a customer known only by social handles joins the "
                               "customer whose orders its events named this many times (0: a mention never merges)")
    exclusive_kinds: list[str] = Field(default=["loyalty_id", "web_account"], description="a customer has at most one value of each")
    repurchase_days: int = Field(default=30, ge=1)
    best_customer_share: float = Field(default=0.05, gt=0, le=1, description="best customers: this top share by 12-month revenue")
    best_customer_refresh_seconds: float = Field(default=30.0, ge=1, description="how often the best-customer threshold "
                                                 "is recomputed (at most a tenth of the worker's time goes to it)")


class SinkSettings(_Section):
    # 50,000: a load makes a fifth of the parts ClickHouse merges; the hub's process used 108 s of CPU for 1M
    # events against 124-131 with 10,000 (bench_end_to_end, one run each). At a steady rate batch_max_seconds decides.
    batch_max_rows: int = Field(default=50_000, ge=1)
    # 0.5: p99 acceptance -> queryable 1.34 s at 2,000 events/s (2.03 s with 1.0), same throughput (bench_latency, bench_end_to_end)
    batch_max_seconds: float = Field(default=0.5, gt=0)
    # Under a backlog the window is longer: when the oldest event of the last batch was accepted by its connector
    # more than backlog_seconds ago, the next batch gathers for up to backlog_batch_max_seconds. A bigger insert
    # costs ClickHouse less an event (bench_sink.py: 114.9 us of CPU an event in batches of 2,500 records, 44.2
    # in batches of 50,000), and the CPU saved goes to clearing the backlog; events that waited that long
    # upstream hardly notice 1.5 s more.
    # At a steady load nothing waits that long, and the window stays batch_max_seconds (bench_latency).
    backlog_seconds: float = Field(default=5.0, gt=0)
    backlog_batch_max_seconds: float = Field(default=2.0, gt=0)
    retry_initial_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=30.0, gt=0)
    group_id: str = "omnihub-clickhouse-sink"


class PrivacySettings(_Section):
    vault_path: Path | None = Field(default=None, description="the key vault (infra/vault.py), shared by every process "
                                    "of the hub; default <data_dir>/vault.sqlite. Keep it safe and backed up")


class ConsoleSettings(_Section):
    host: str = Field(default="127.0.0.1", description="where the hub serves its web console")
    port: int = Field(default=8125, ge=0, le=65535, description="the web console's port (0: any free port)")
    enabled: bool = True
    tokens: dict[str, str] = Field(default_factory=dict, description="role -> token; a page of a role listed here "
                                   "needs its token. The service role (personal data) always needs one: without "
                                   "it the hub makes one in <data_dir>/console-service-token")
    capacity_events_per_minute: int = Field(default=3000, ge=1, description="the load the platform is declared to "
                                            "carry: the IT chart's capacity line and the reports' capacity parameter")


class SchemaSettings(_Section):
    registry_url: str | None = Field(default=None, description="Confluent-compatible schema registry; unset means single-object encoding")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNIHUB_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(default=Path(".omnihub"), description="logs, embedded data, connector positions")
    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    topics: TopicSettings = TopicSettings()
    streams: StreamSettings = StreamSettings()
    identity: IdentitySettings = IdentitySettings()
    sink: SinkSettings = SinkSettings()
    schemas: SchemaSettings = SchemaSettings()
    privacy: PrivacySettings = PrivacySettings()
    console: ConsoleSettings = ConsoleSettings()

    # Set by load_settings before construction; a class attribute because pydantic-settings builds
    # sources from the class.
    _config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._config_file))
        return tuple(sources)

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka.bootstrap_servers is None

    @property
    def vault_path(self) -> Path:
        return self.privacy.vault_path or Path(self.data_dir) / "vault.sqlite"

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse.url is None


class SettingsError(Exception):
    """A configuration problem, worded for the person who wrote the config."""


def _describe(error: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        env_name = "OMNIHUB_" + "__".join(str(part).upper() for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling)"
        lines.append(f"  {where}: {message} [got {item.get('input')!r}; env {env_name}]")
    return "\n".join(lines)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from an explicit file, $OMNIHUB_CONFIG, or ./omnihub.toml if present."""
    explicit = config_file or os.environ.get("OMNIHUB_CONFIG")
    path: Path | None = Path(explicit) if explicit else None
    if path is not None and not path.is_file():
        raise SettingsError(f"config file not found: {path}")
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    origin = f"file {path} and OMNIHUB_* environment" if path else "OMNIHUB_* environment"
    Settings._config_file = path
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_describe(error, origin)) from None
    except ValueError as error:  # e.g. malformed TOML
        raise SettingsError(f"invalid configuration ({origin}): {error}") from None
    finally:
        Settings._config_file = None
