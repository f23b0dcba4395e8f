"""Connector config files (YAML): what a channel's source is, where its records go, how they map.

A config is checked twice: by pydantic (types, allowed keys), then against the target Avro schema
(every mapped field exists there, every required field is mapped). Either way the error names the
file, the line and the field, because an integration engineer fixes configs, not Python.
"""
from __future__ import annotations

from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.serde import schema_json

IDENTIFIER_KINDS = ("email", "phone", "loyalty_id", "web_account", "social_handle", "store_terminal")
IdentifierKind = Literal["email", "phone", "loyalty_id", "web_account", "social_handle", "store_terminal"]

# Fields the runtime fills itself; a config may not map them.
COMPUTED_FIELDS = {"event_id", "channel", "connector", "identifiers"}


TIMESTAMP_FORMATS = ("iso8601", "epoch_seconds", "epoch_millis")


def strptime_problem(fmt: str) -> str | None:
    """Why a strptime pattern cannot work (a bad directive, a stray %), or None: checked when the config
    loads, since at run time it would reject every record."""
    if "%" not in fmt:
        return ("not a strptime pattern (it has no %-directive) nor one of " + ", ".join(TIMESTAMP_FORMATS))
    try:
        datetime.strptime("", fmt)
    except ValueError as error:
        if "bad directive" in str(error) or "stray %" in str(error):
            return str(error)
    return None


class ConfigError(ValueError):
    """A wrong connector config; str() is the message to show, with file and line."""


class _Strict(BaseModel):
    # A misspelt key must be an error, not an ignored setting.
    model_config = ConfigDict(extra="forbid")


class ValueSpec(_Strict):
    """Where one value comes from and how it is coerced. In YAML a bare string is shorthand for {path: ...}."""

    path: str | None = Field(default=None, description="dotted path into the record (nested JSON), or a CSV column")
    const: Any = Field(default=None, description="a constant instead of a path")
    join: list[str] | None = Field(default=None, description="paths whose values are joined with sep")
    derive: Literal["lines"] | None = Field(default=None, description="money: computed instead of read; lines = the sum of "
                                            "quantity x unit_price_minor over the mapped lines (a receipt without a total)")
    plus: list[str] = Field(default_factory=list, description="money: source paths added (e.g. shipping the customer paid, "
                                                              "when the source's total leaves it out); missing counts as 0")
    minus: list[str] = Field(default_factory=list, description="money: source paths subtracted (e.g. a discount); missing counts as 0")
    sep: str = ":"
    type: Literal["string", "int", "decimal", "money", "timestamp", "bool", "list"] | None = Field(
        default=None, description="coercion; inferred from the target schema field when omitted")
    amount: Literal["decimal", "minor"] = Field(default="decimal", description="money: '12.50' (decimal) or 1250 (minor units)")
    decimal_separator: Literal[".", ","] = "."
    format: str = Field(default="iso8601", description="timestamp: iso8601, epoch_seconds, epoch_millis or a strptime pattern")
    timezone: str | None = Field(default=None, description="timestamp: IANA zone for values written without an offset")
    regex: str | None = Field(default=None, description="keep the first group (or the match) of this pattern; no match = missing")
    values: dict[str, Any] | None = Field(default=None, description="translate source values; any other value is rejected")
    pattern: str | None = Field(default=None, description="reject the record unless the text value fully matches")
    min: float | None = Field(default=None, description="numbers: reject smaller values")
    max: float | None = Field(default=None, description="numbers: reject larger values")
    null_values: list[str] = Field(default_factory=lambda: [""], description="source values that mean missing")
    default: Any = None
    required: bool | None = Field(default=None, description="reject the record when missing; inferred from the schema when omitted")
    each: dict[str, "ValueSpec"] | None = Field(default=None, description="list field: how each item maps")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> "ValueSpec":
        given = [name for name in ("path", "const", "join", "derive") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, const, join or derive (got {', '.join(given) or 'none'})")
        if (self.derive or self.plus or self.minus) and self.type not in (None, "money"):
            raise ValueError("derive, plus and minus compute money: they need type money (or none)")
        if self.timezone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.timezone!r} (use an IANA name such as Europe/Paris)") from None
        if self.format not in TIMESTAMP_FORMATS:
            problem = strptime_problem(self.format)
            if problem:
                raise ValueError(f"format {self.format!r}: {problem}")
        for name in ("regex", "pattern"):
            if getattr(self, name) is not None:
                import re

                try:
                    re.compile(getattr(self, name))
                except re.error as error:
                    raise ValueError(f"{name} does not compile: {error}") from None
        return self


class IdentifierSpec(ValueSpec):
    """A field that identifies the customer, and of what kind."""

    kind: IdentifierKind
    platform: str | ValueSpec | None = Field(default=None, description="social_handle: a platform name, or where to read it")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:  # no bare-string shorthand: kind is required
        return data

    @model_validator(mode="after")
    def _platform_for_handles(self) -> "IdentifierSpec":
        if self.kind == "social_handle" and self.platform is None:
            raise ValueError("a social_handle needs its platform (a name such as facebook, or {path: ...})")
        return self


class FileSource(_Strict):
    type: Literal["file"]
    path: Path = Field(description="relative to the config file")
    format: Literal["jsonl", "csv", "json"] | None = Field(
        default=None, description="jsonl, csv or json (one document); inferred from the file when omitted")
    records_at: str | None = Field(default=None, description="json: dotted path to the array of records (default: the top-level array)")
    encoding: str = "utf-8"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    group_rows_by: str | None = Field(default=None, description="csv: consecutive rows with the same value here are one record (receipt lines)")
    follow: bool = Field(default=False, description="keep reading as the file grows, until stopped")
    poll_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _follow_jsonl_only(self) -> "FileSource":
        if self.follow and (self.format in ("csv", "json") or self.records_at
                            or (self.format is None and self.path.suffix.lower() in (".csv", ".json"))):
            raise ValueError("follow is supported for JSON Lines files only (a CSV row or a JSON document may be "
                             "half written)")
        if self.records_at is not None and self.format not in (None, "json"):
            raise ValueError("records_at applies to JSON documents (format: json) only")
        return self


class WebhookSource(_Strict):
    type: Literal["webhook"]
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    path: str = Field(default="/", pattern="^/")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    token_env: str | None = Field(default=None, description="environment variable holding the token callers send as 'Authorization: Bearer ...'")
    sample: Path | None = Field(default=None, description="a JSON Lines file of example payloads, for `connectors check`")


class ConnectorConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    channel: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    schema_name: str = Field(default="channel_event", alias="schema")
    key: str = Field(default="source_id", description="the mapped field whose value keys the Kafka record")
    source: Annotated[Union[FileSource, WebhookSource], Field(discriminator="type")]
    fields: dict[str, ValueSpec]
    attributes: dict[str, ValueSpec] = Field(default_factory=dict, description="channel-specific details, kept as text")
    identifiers: list[IdentifierSpec] = Field(default_factory=list)
    require_identifier: bool = Field(default=False, description="reject records that carry no customer identifier")

    @property
    def source_format(self) -> str:
        if isinstance(self.source, WebhookSource):
            return "json"
        if self.source.format or self.source.records_at:
            return self.source.format or "json"
        return {".csv": "csv", ".json": "json"}.get(self.source.path.suffix.lower(), "jsonl")


# --- YAML with line numbers -------------------------------------------------------------------

def _node_at(root: yaml.Node | None, loc: tuple, key: bool) -> yaml.Node | None:
    """The deepest YAML node on a pydantic error location (union tags that are not keys are skipped);
    with key, the last step gives the key's node instead of its value's (for unknown keys)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                continue  # e.g. the 'file' tag of a discriminated union, or a missing key
            node = match[0] if key and part == loc[-1] else match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
    return node


def _where(path: Path, root: yaml.Node | None, loc: tuple, key: bool = False) -> str:
    node = _node_at(root, loc, key)
    line = f":{node.start_mark.line + 1}" if node is not None else ""
    field = ".".join(str(part) for part in loc if part not in ("file", "webhook")) or "(top level)"
    return f"{path}{line}: {field}"


def _schema_fields(schema: dict) -> dict[str, Any]:
    return {field["name"]: field for field in schema["fields"]}


def _nullable(field: dict) -> bool:
    return isinstance(field["type"], list) and "null" in field["type"] or "default" in field


def _check_against_schema(data: dict) -> list[tuple[tuple, str]]:
    """Mapped fields must exist in the target schema; its required fields must be mapped. Works on the raw
    YAML, so these problems are reported with the others even when the rest of the file is wrong."""
    schema_name = data.get("schema", "channel_event")
    try:
        fields = _schema_fields(schema_json(schema_name))
    except (FileNotFoundError, TypeError):
        return [(("schema",), f"no schema named {schema_name!r} in schemas/avro")]
    mapped = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    problems = []
    for name, spec in mapped.items():
        if name in COMPUTED_FIELDS:
            problems.append((("fields", name), "filled by the connector runtime; remove it from fields"))
        elif name == "attributes":
            problems.append((("fields", name), "attributes are declared in the top-level 'attributes' section"))
        elif name not in fields:
            problems.append((("fields", name), f"not a field of schema {schema_name} "
                                               f"(fields: {', '.join(sorted(set(fields) - COMPUTED_FIELDS - {'attributes'}))})"))
        elif isinstance(spec, dict) and isinstance(spec.get("each"), dict):
            item = fields[name]["type"]
            item_fields = _schema_fields(item["items"]) if isinstance(item, dict) and item.get("type") == "array" else None
            if item_fields is None:
                problems.append((("fields", name, "each"), "only list fields take 'each'"))
                continue
            for sub in spec["each"]:
                if sub not in item_fields:
                    problems.append((("fields", name, "each", sub), f"not a field of {name} items ({', '.join(item_fields)})"))
            for sub, field in item_fields.items():
                if not _nullable(field) and sub not in spec["each"]:
                    problems.append((("fields", name, "each"), f"{name} items need '{sub}'"))
    if "fields" in data:
        for name, field in fields.items():
            if name not in COMPUTED_FIELDS and not _nullable(field) and name not in mapped:
                problems.append((("fields",), f"schema {schema_name} requires '{name}'"))
    for name, spec in mapped.items():
        if name in fields and isinstance(spec, dict) and (spec.get("derive") or spec.get("plus") or spec.get("minus")):
            if not name.endswith("_minor"):
                problems.append((("fields", name), "derive, plus and minus apply to money fields (*_minor) only"))
            elif spec.get("derive") == "lines" and "lines" not in mapped:
                problems.append((("fields", name, "derive"), "derive: lines needs the lines field mapped"))
    if data.get("key", "source_id") not in fields:
        problems.append((("key",), f"not a field of schema {schema_name}"))
    return problems


def _duplicate_keys(node: yaml.Node | None, loc: tuple = ()) -> list[tuple[int, str]]:
    """(line, message) for each key written twice in one mapping: YAML would keep the last silently."""
    found = []
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key, value in node.value:
            where = ".".join(map(str, (*loc, key.value)))
            if key.value in seen:
                found.append((key.start_mark.line + 1, f"{where}: duplicate key (also on line {seen[key.value]}; "
                                                       f"YAML would keep only the last)"))
            else:
                seen[key.value] = key.start_mark.line + 1
            found.extend(_duplicate_keys(value, (*loc, key.value)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.extend(_duplicate_keys(item, (*loc, index)))
    return found


REVENUE_EVENT_TYPES = ("order", "receipt")   # what the reports count as revenue (sinks/sql/queries)


def revenue_warnings(config: ConnectorConfig) -> list[str]:
    """Warnings for a config whose revenue-carrying events would have no amount: every report would show
    their revenue as 0, and nothing else would say why."""
    if "total_minor" in config.fields:
        return []
    spec = config.fields.get("event_type")
    if spec is None:
        return []
    possible = {spec.const} if spec.const is not None else set((spec.values or {}).values()) or {spec.default}
    carrying = sorted(t for t in possible if t in REVENUE_EVENT_TYPES)   # read as is from the source: checked per record
    if not carrying:
        return []
    return [f"event type {', '.join(carrying)} carries revenue but total_minor is not mapped: these events will count "
            f"0 in every revenue report; map the total, or derive it from the lines (total_minor: {{derive: lines}})"]


def load_connector_config(path: str | Path) -> ConnectorConfig:
    """Parse and check a config file; raises ConfigError listing every problem with its line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    # Every problem of the file at once: duplicate keys, then pydantic's, then the schema's.
    lines = [(line, f"{path}:{line}: {message}") for line, message in _duplicate_keys(root)]

    def problem(loc: tuple, message: str, key: bool) -> None:
        node = _node_at(root, loc, key)
        lines.append((node.start_mark.line + 1 if node else 0, f"{_where(path, root, loc, key)}: {message}"))

    try:
        config = ConnectorConfig.model_validate(data)
    except ValidationError as error:
        for e in error.errors():
            unknown = e["type"] == "extra_forbidden"
            problem(tuple(e["loc"]), "unknown key (check the spelling)" if unknown else e["msg"], unknown)
    for loc, message in _check_against_schema(data):
        problem(loc, message, True)
    if lines:
        ordered = [text for _, text in sorted(lines, key=lambda item: item[0])]
        raise ConfigError(f"invalid connector config ({len(ordered)} problem(s)):\n  " + "\n  ".join(ordered))
    return config


def resolve(config_path: Path, relative: Path) -> Path:
    """A path in a config is relative to the config file."""
    return (Path(config_path).parent / relative).resolve()


def bundled_configs_dir() -> Path:
    return Path(str(resources.files("connectors") / "channels"))


def bundled_configs() -> list[Path]:
    return sorted(bundled_configs_dir().glob("*.yaml"))


def find_config(name_or_path: str) -> Path:
    """A config file path, or the name of a bundled config (web-orders, store-sales, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_configs_dir() / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    names = ", ".join(p.stem for p in bundled_configs())
    raise ConfigError(f"no config file {name_or_path!r} and no bundled connector of that name (bundled: {names})")
