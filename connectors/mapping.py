"""A connector config's field mapping, compiled once into plain functions: source record -> ChannelEvent.

Compiled because it runs for every record (a million in the scenario benchmark). A record that
does not map raises MappingError naming the target field and the source path, which becomes the
dead letter's reason.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable
from zoneinfo import ZoneInfo

from connectors.config import ConnectorConfig, ValueSpec
from schemas.models import event_id, to_minor_units
from schemas.serde import schema_json

Getter = Callable[[Any], Any]


class MappingError(ValueError):
    pass


def _path_getter(path: str) -> Getter:
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    if len(parts) == 1 and isinstance(parts[0], str):  # the common case, kept cheap: it runs per field per record
        key = parts[0]
        return lambda record: record.get(key) if record.__class__ is dict else None

    def get(record: Any) -> Any:
        value = record
        for part in parts:
            if isinstance(value, dict):
                value = value.get(part) if isinstance(part, str) else value.get(str(part))
            elif isinstance(value, list) and isinstance(part, int):
                value = value[part] if part < len(value) else None
            else:
                return None
            if value is None:
                return None
        return value

    return get


def _raw_getter(spec: ValueSpec) -> Getter:
    if spec.const is not None:
        const = spec.const
        return lambda record: const
    if spec.join is not None:
        getters = [_path_getter(p) for p in spec.join]
        sep = spec.sep

        def joined(record: Any) -> Any:
            parts = [g(record) for g in getters]
            if any(p is None or p == "" for p in parts):
                return None
            return sep.join(str(p).strip() for p in parts)

        return joined
    return _path_getter(spec.path)


def _text(value: Any) -> str:
    if value.__class__ is str:
        return value.strip()
    if isinstance(value, (dict, list)):
        raise ValueError(f"expected a single value, got {type(value).__name__}")
    return str(value).strip()


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        number = Decimal(_text(value))
    except InvalidOperation:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number != number.to_integral_value():
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(number)


def _coercer(spec: ValueSpec, kind: str) -> Callable[[Any], Any]:
    if kind == "string":
        return _text
    if kind == "int":
        return _to_int
    if kind == "bool":
        truth = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

        def to_bool(value: Any) -> bool:
            if isinstance(value, bool):
                return value
            try:
                return truth[_text(value).lower()]
            except KeyError:
                raise ValueError(f"expected true/false, got {value!r}") from None

        return to_bool
    if kind in ("decimal", "money"):
        comma = spec.decimal_separator == ","

        def to_decimal(value: Any) -> Decimal:
            if isinstance(value, float):
                value = repr(value)
            text = _text(value).replace(" ", "")
            if comma:
                text = text.replace(".", "").replace(",", ".")
            try:
                return Decimal(text)
            except InvalidOperation:
                raise ValueError(f"expected a number, got {value!r}") from None

        if kind == "decimal":
            return to_decimal
        if spec.amount == "minor":
            return _to_int
        separator = spec.decimal_separator

        def to_minor(value: Any) -> int:
            # Fast path for the usual "1234.50" / 1234 with integer arithmetic; Decimal for the rest.
            if value.__class__ is int:
                return value * 100
            if value.__class__ is str:
                whole, sep, fraction = value.strip().partition(separator)
                if whole.isdigit() and len(fraction) <= 2 and (not sep or fraction.isdigit()):
                    return int(whole) * 100 + int(fraction.ljust(2, "0") or 0)
            return to_minor_units(to_decimal(value), "amount")

        return to_minor
    if kind == "timestamp":
        return _timestamp_coercer(spec)
    if kind == "list":
        def to_list(value: Any) -> list:
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {type(value).__name__}")
            return value
        return to_list
    raise AssertionError(kind)


def _timestamp_coercer(spec: ValueSpec) -> Callable[[Any], datetime]:
    zone = ZoneInfo(spec.timezone) if spec.timezone else None
    fmt = spec.format

    def aware(moment: datetime, value: Any) -> datetime:
        if moment.tzinfo is None:
            if zone is None:
                raise ValueError(f"timestamp {value!r} has no time zone offset and the config names no timezone")
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(timezone.utc)

    if fmt == "iso8601":
        def parse(value: Any) -> datetime:
            try:
                return aware(datetime.fromisoformat(_text(value)), value)
            except ValueError as error:
                if "time zone" in str(error):
                    raise
                raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from None
        return parse
    if fmt in ("epoch_seconds", "epoch_millis"):
        divisor = 1 if fmt == "epoch_seconds" else 1000

        def epoch(value: Any) -> datetime:
            try:
                return datetime.fromtimestamp(float(_text(value)) / divisor, tz=timezone.utc)
            except (ValueError, OverflowError, OSError):
                raise ValueError(f"not an epoch timestamp: {value!r}") from None
        return epoch

    def pattern(value: Any) -> datetime:
        try:
            return aware(datetime.strptime(_text(value), fmt), value)
        except ValueError as error:
            if "time zone" in str(error):
                raise
            raise ValueError(f"timestamp {value!r} does not match format {fmt!r}") from None
    return pattern


def _checked(coerce: Callable[[Any], Any], pattern: re.Pattern | None, low: float | None, high: float | None) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if pattern is not None and not pattern.fullmatch(_text(value)):
            raise ValueError(f"{value!r} does not match {pattern.pattern}")
        result = coerce(value)
        if low is not None and result < low:
            raise ValueError(f"{value!r} is below the minimum {low:g}")
        if high is not None and result > high:
            raise ValueError(f"{value!r} is above the maximum {high:g}")
        return result
    return check


def _infer_kind(field: dict | None) -> str:
    """The coercion a schema field implies: *_minor longs are money, timestamp-millis is a timestamp."""
    if field is None:
        return "string"
    avro = field["type"]
    if isinstance(avro, list):
        avro = next(t for t in avro if t != "null")
    if isinstance(avro, dict):
        if avro.get("logicalType") == "timestamp-millis":
            return "timestamp"
        if avro.get("type") == "array":
            return "list"
        avro = avro.get("type")
    if avro in ("int", "long"):
        return "money" if field["name"].endswith("_minor") else "int"
    return "string"


def _is_required(field: dict | None) -> bool:
    if field is None:
        return False
    avro = field["type"]
    return not (isinstance(avro, list) and "null" in avro) and "default" not in field


def compile_value(name: str, spec: ValueSpec, field: dict | None = None) -> Callable[[Any], Any]:
    """One target value: read, treat null values, regex, translate, default, coerce, check required."""
    raw = _raw_getter(spec)
    where = f"{name} (from {spec.path or '+'.join(spec.join or []) or 'constant'})"
    nulls = set(spec.null_values)
    regex = re.compile(spec.regex) if spec.regex else None
    values = spec.values
    default = spec.default
    required = spec.required if spec.required is not None else _is_required(field)
    kind = spec.type or _infer_kind(field)
    if spec.each is not None:
        item_fields = {f["name"]: f for f in field["type"]["items"]["fields"]} if field else {}
        item_mappers = [(sub, compile_value(f"{name}[].{sub}", s, item_fields.get(sub))) for sub, s in spec.each.items()]

        def coerce(value: Any) -> list:
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {type(value).__name__}")
            items = []
            for index, item in enumerate(value):
                try:
                    items.append({sub: mapper(item) for sub, mapper in item_mappers})
                except MappingError as error:
                    raise MappingError(str(error).replace(f"{name}[]", f"{name}[{index}]", 1)) from None
            return items
    else:
        coerce = _coercer(spec, kind)
        if spec.pattern is not None:
            coerce = _checked(coerce, re.compile(spec.pattern), None, None)
        if spec.min is not None or spec.max is not None:
            coerce = _checked(coerce, None, spec.min, spec.max)

    empty = [] if kind == "list" or spec.each is not None else None
    plain = regex is None and values is None and default is None and spec.each is None

    def convert(value: Any) -> Any:
        if value is None:
            if required:
                raise MappingError(f"{where}: missing")
            return empty
        try:
            return coerce(value)
        except MappingError:
            raise
        except ValueError as error:
            raise MappingError(f"{where}: {error}") from None

    def read(record: Any) -> Any:
        """The raw value, None for a null value (blank, or one of null_values)."""
        value = raw(record)
        if value.__class__ is str and (value in nulls or ((not value or value[0].isspace() or value[-1].isspace())
                                                          and value.strip() in nulls)):
            return None
        return value

    if plain:  # the usual spec (a path and a coercion): the fewest steps, since it runs per field per record
        return lambda record: convert(read(record))

    def mapped(record: Any) -> Any:
        value = read(record)
        if value is not None and regex is not None:
            match = regex.search(_text(value))
            value = (match.group(1) if match.groups() else match.group(0)) if match else None
        if value is not None and values is not None:
            key = _text(value)
            if key not in values:
                raise MappingError(f"{where}: unexpected value {key!r} (expected one of {', '.join(map(str, values))})")
            value = values[key]
        if value is None:
            value = default
        if spec.each is not None and value == [] and required:
            value = None  # an empty list where items are required is missing
        return convert(value)

    return mapped


def _adjustments(name: str, spec: ValueSpec) -> Callable[[Any], int] | None:
    """plus and minus: source amounts added to or taken from a money value (missing ones count as 0)."""
    if not spec.plus and not spec.minus:
        return None
    terms = [(sign, compile_value(f"{name} ({'+' if sign > 0 else '-'}{path})",
                                  ValueSpec(path=path, type="money", amount=spec.amount,
                                            decimal_separator=spec.decimal_separator, required=False)))
             for sign, paths in ((1, spec.plus), (-1, spec.minus)) for path in paths]
    return lambda record: sum(sign * (mapper(record) or 0) for sign, mapper in terms)


def compile_money(name: str, spec: ValueSpec, field: dict | None) -> Callable[[Any, dict], Any]:
    """A money field that may be derived from the mapped event (derive: lines) and adjusted by plus/minus:
    (source record, event mapped so far) -> minor units."""
    adjust = _adjustments(name, spec)
    required = spec.required if spec.required is not None else _is_required(field)
    if spec.derive == "lines":
        def base(record: Any, event: dict) -> int | None:
            lines = event.get("lines") or []
            return sum(line["quantity"] * line["unit_price_minor"] for line in lines) if lines else None
    else:
        read = compile_value(name, spec, field)

        def base(record: Any, event: dict) -> int | None:
            return read(record)

    def value(record: Any, event: dict) -> int | None:
        amount = base(record, event)
        if amount is None:
            if required:
                raise MappingError(f"{name} (derived from {spec.derive}): missing" if spec.derive else f"{name}: missing")
            return None
        return amount + adjust(record) if adjust is not None else amount

    return value


def _attribute_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class RecordMapper:
    """Source record (dict) -> ChannelEvent dict ready for Avro encoding."""

    def __init__(self, config: ConnectorConfig):
        self.config = config
        fields = {f["name"]: f for f in schema_json(config.schema_name)["fields"]}
        computed = {name for name, spec in config.fields.items() if spec.derive or spec.plus or spec.minus}
        self.fields = [(name, compile_value(name, spec, fields.get(name))) for name, spec in config.fields.items()
                       if name not in computed]
        # after the others: a derived amount reads the mapped lines
        self.computed = [(name, compile_money(name, config.fields[name], fields.get(name))) for name in computed]
        self.attributes = [(name, compile_value(f"attributes.{name}", spec)) for name, spec in config.attributes.items()]
        self.identifiers = []
        for spec in config.identifiers:
            platform = spec.platform
            if isinstance(platform, ValueSpec):
                platform_value = compile_value(f"identifiers.{spec.kind}.platform", platform)
            else:
                platform_value = (lambda constant: (lambda record: constant))(platform)
            self.identifiers.append((spec.kind, compile_value(f"identifiers.{spec.kind}", spec), platform_value))
        self.tried = ", ".join(s.path or "+".join(s.join or []) or "constant" for s in config.identifiers)
        defaults = {name: f.get("default") for name, f in fields.items() if "default" in f}
        self.template = {**defaults, "channel": config.channel, "connector": config.name}

    def identifiers_of(self, record: Any, lenient: bool = False) -> list[dict]:
        """The record's customer identifiers; lenient, those that map when others do not (for a record
        rejected for another reason: its dead letter is sealed for them)."""
        identifiers = []
        for kind, mapper, platform in self.identifiers:
            try:
                value = mapper(record)
                if value is not None:
                    identifiers.append({"kind": kind, "value": value, "platform": platform(record)})
            except (MappingError, ValueError, TypeError, AttributeError):
                if not lenient:
                    raise
        return identifiers

    def map(self, record: Any) -> dict:
        if not isinstance(record, dict):
            raise MappingError(f"expected a JSON object, got {type(record).__name__}")
        event = dict(self.template)
        for name, mapper in self.fields:
            event[name] = mapper(record)
        for name, money in self.computed:
            event[name] = money(record, event)
        event["attributes"] = {name: _attribute_text(value) for name, mapper in self.attributes
                               if (value := mapper(record)) is not None}
        identifiers = self.identifiers_of(record)
        if not identifiers and self.config.require_identifier:
            raise MappingError(f"no customer identifier (tried {self.tried})")
        event["identifiers"] = identifiers
        event["event_id"] = event_id(self.config.channel, event["source_id"])
        return event
