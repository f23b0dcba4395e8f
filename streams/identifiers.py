"""Customer identifiers to their canonical form, so the same person's identifiers compare equal.

An identifier that cannot be normalized (an email without @, a phone that is not a valid number)
or that is on the blocked list (placeholders typed for customers who gave nothing) is dropped from
matching with a reason, never raised: the event still goes on the timeline.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import phonenumbers

# Mail providers that ignore dots and +tags in the local part: only there is removing them safe.
DOT_BLIND_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


class Identifier(NamedTuple):
    """A tuple, not a dataclass: built, hashed and compared in C (several per event)."""
    kind: str
    value: str   # canonical

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"


def normalize_email(raw: str) -> str:
    value = raw.strip().lower()
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or " " in value:
        raise ValueError(f"not an email address: {raw!r}")
    if domain in DOT_BLIND_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        domain = DOT_BLIND_DOMAINS[domain]
    return f"{local}@{domain}"


def normalize_phone(raw: str, default_region: str) -> str:
    text = raw.strip()
    if text.startswith("00") and text[2:3] not in ("", "0"):
        text = "+" + text[2:]  # international prefix written with zeros (0033 6...)
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as error:
        raise ValueError(f"not a phone number: {raw!r} ({error})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"not a valid phone number: {raw!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_handle(raw: str, platform: str | None) -> str:
    handle = raw.strip().lstrip("@").lower()
    if not handle or not platform:
        raise ValueError(f"social handle {raw!r} needs a handle and a platform")
    return f"{platform.strip().lower()}:{handle}"


@lru_cache(maxsize=500_000)
def _normalized(kind: str, value: str, platform: str | None, default_region: str) -> tuple[Identifier | None, str | None]:
    """(canonical identifier, None) or (None, why not): the same identifiers come back with every event of
    a person, and parsing a phone number costs more than resolving the event."""
    try:
        return Identifier(kind, _normalize(kind, value, platform, default_region)), None
    except ValueError as error:
        return None, str(error)


def normalize(kind: str, value: str, platform: str | None, default_region: str) -> str:
    identifier, error = _normalized(kind, value, platform, default_region)
    if error is not None:
        raise ValueError(error)
    return identifier.value


def _normalize(kind: str, value: str, platform: str | None, default_region: str) -> str:
    if kind == "email":
        return normalize_email(value)
    if kind == "phone":
        return normalize_phone(value, default_region)
    if kind == "social_handle":
        return normalize_handle(value, platform)
    if kind in ("loyalty_id", "web_account", "store_terminal", "order", "order_mention"):
        text = value.strip().upper()
        if not text:
            raise ValueError(f"empty {kind}")
        return text
    raise ValueError(f"unknown identifier kind {kind!r}")


def normalize_all(raw_identifiers: list[dict], default_region: str, blocked: set[str]) -> tuple[list[Identifier], list[str]]:
    """(canonical identifiers, without duplicates; reasons for the ones dropped)."""
    identifiers: list[Identifier] = []
    dropped: list[str] = []
    for raw in raw_identifiers:
        kind, value = raw["kind"], raw["value"]
        identifier, error = _normalized(kind, value, raw.get("platform"), default_region)
        if identifier is None:
            dropped.append(f"{kind} dropped from matching: {error}")
            continue
        if value.strip().lower() in blocked or identifier.value.lower() in blocked:
            dropped.append(f"{kind} {value.strip()!r} is a blocked placeholder value")
            continue
        if identifier not in identifiers:
            identifiers.append(identifier)
    return identifiers, dropped
