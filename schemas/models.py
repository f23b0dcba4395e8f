"""Record-level helpers shared by every step: deterministic event ids, dead letters, money in minor units."""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation


# Namespace for deterministic event ids: the same source record always maps to the same id, so a
# re-read file or a replayed topic produces duplicates that sinks recognise.
EVENT_NAMESPACE = uuid.UUID("6f1c6f0e-4b1e-5c55-9d2a-6f6d6e696875")
_EVENT_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


def event_id(channel: str, source_id: str) -> str:
    """uuid.uuid5(EVENT_NAMESPACE, "channel:source_id") as text, computed without building UUID objects
    (it runs once per record; tests/test_serde.py checks it against uuid.uuid5)."""
    digest = bytearray(hashlib.sha1(_EVENT_NAMESPACE_BYTES + f"{channel}:{source_id}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def dead_letter(component: str, source: str, position: str, error: str | Exception, raw: bytes | None,
                identifier_tokens: list[str] | None = None) -> dict:
    """The record for schemas/avro/dead_letter.avsc; an exception is described by its type and message.
    identifier_tokens: the people the raw record names, when it is sealed for them."""
    if isinstance(error, Exception):
        error = f"{type(error).__name__}: {error}"
    return {"component": component, "source": source, "position": position, "error": error, "raw": raw or b"",
            "rejected_at": datetime.now(timezone.utc), "identifier_tokens": identifier_tokens or []}


def to_minor_units(value: Decimal | str | int | float, field: str) -> int:
    """Decimal amount (e.g. "19.99") to integer cents; more than 2 decimals is an error, not a rounding."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{field}: not a number: {value!r}") from None
    minor = amount * 100
    if minor != minor.to_integral_value():
        raise ValueError(f"{field}: more than 2 decimals: {value!r}")
    return int(minor)
