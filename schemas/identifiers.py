"""Customer identifiers to their canonical form, so the same person's identifiers compare equal.

An identifier that cannot be normalized (an email without @, a phone that is not even a possible number)
or that is on the blocked list (placeholders typed for customers who gave nothing) is dropped from
matching with a reason, never raised: the event still goes on the timeline.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import phonenumbers

# Kinds that name a person: kept as tokens (keyed hashes, infra/vault.py) everywhere past the connectors.
PERSONAL_KINDS = ("email", "phone", "loyalty_id", "web_account", "social_handle")
TOKEN_FORM = re.compile(r"[0-9a-f]{32}")   # a token's value: the vault's HMAC, 32 hex digits
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


def normalize_phone(raw: str, default_region: str, fallback_regions: tuple[str, ...] = ()) -> str:
    return normalize_phone_noted(raw, default_region, fallback_regions)[0]


def _placeholder_digits(number: phonenumbers.PhoneNumber) -> bool:
    """0600000000, 0611111111: typed for a customer who gave nothing."""
    return len(set(str(number.national_number)[1:])) <= 1


def normalize_phone_noted(raw: str, default_region: str, fallback_regions: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """(E.164 form, None) for a valid number; (E.164 form, why it is kept anyway) for one that is valid in
    exactly one of the fallback regions (a French overseas mobile typed without +590/+262 is invalid for FR)
    or that is at least a possible number there; ValueError otherwise. A number typed at a till is still how
    that person is known, so strict validation alone must not drop it."""
    text = raw.strip()
    if text.startswith("00") and text[2:3] not in ("", "0"):
        text = "+" + text[2:]  # international prefix written with zeros (0033 6...)
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as error:
        raise ValueError(f"not a phone number: {raw!r} ({error})") from None
    e164 = phonenumbers.PhoneNumberFormat.E164
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, e164), None
    if not text.startswith("+"):
        elsewhere = set()
        for region in fallback_regions:
            try:
                candidate = phonenumbers.parse(text, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(candidate):
                elsewhere.add(phonenumbers.format_number(candidate, e164))
        if len(elsewhere) == 1:
            [found] = elsewhere
            return found, f"phone {raw.strip()!r} is not a valid {default_region} number; matched as {found}"
    if phonenumbers.is_possible_number(number) and not _placeholder_digits(number):
        kept = phonenumbers.format_number(number, e164)
        return kept, f"phone {raw.strip()!r} fails strict validation but is a possible number; matched as {kept}"
    raise ValueError(f"not a valid phone number: {raw!r}")


def normalize_handle(raw: str, platform: str | None) -> str:
    handle = raw.strip().lstrip("@").lower()
    if not handle or not platform:
        raise ValueError(f"social handle {raw!r} needs a handle and a platform")
    return f"{platform.strip().lower()}:{handle}"


@lru_cache(maxsize=500_000)
def _normalized(kind: str, value: str, platform: str | None, default_region: str,
                fallback_regions: tuple[str, ...] = ()) -> tuple[Identifier | None, str | None]:
    """(canonical identifier, None or a note on how it was read) or (None, why not): the same identifiers
    come back with every event of a person, and parsing a phone number costs more than resolving the event."""
    try:
        if kind == "phone":
            canonical, note = normalize_phone_noted(value, default_region, fallback_regions)
            return Identifier(kind, canonical), note
        return Identifier(kind, _normalize(kind, value, platform)), None
    except ValueError as error:
        return None, str(error)


def normalize(kind: str, value: str, platform: str | None, default_region: str,
              fallback_regions: tuple[str, ...] = ()) -> str:
    identifier, error = _normalized(kind, value, platform, default_region, fallback_regions)
    if identifier is None:
        raise ValueError(error)
    return identifier.value


def _normalize(kind: str, value: str, platform: str | None) -> str:
    if kind == "email":
        return normalize_email(value)
    if kind == "social_handle":
        return normalize_handle(value, platform)
    if kind in ("loyalty_id", "web_account", "store_terminal", "order", "order_mention"):
        text = value.strip().upper()
        if not text:
            raise ValueError(f"empty {kind}")
        return text
    raise ValueError(f"unknown identifier kind {kind!r}")


def normalize_all(raw_identifiers: list[dict], default_region: str, blocked: set[str],
                  fallback_regions: tuple[str, ...] = ()) -> tuple[list[Identifier], list[str]]:
    """(canonical identifiers, without duplicates; reasons for the ones dropped or read leniently)."""
    identifiers: list[Identifier] = []
    notes: list[str] = []
    for raw in raw_identifiers:
        kind, value = raw["kind"], raw["value"]
        identifier, note = _normalized(kind, value, raw.get("platform"), default_region, fallback_regions)
        if identifier is None:
            notes.append(f"{kind} dropped from matching: {note}")
            continue
        if value.strip().lower() in blocked or identifier.value.lower() in blocked:
            notes.append(f"{kind} {value.strip()!r} is a blocked placeholder value")
            continue
        if note is not None:
            notes.append(note)
        if identifier not in identifiers:
            identifiers.append(identifier)
    return identifiers, notes


def withheld(note: str, values) -> str:
    """A note without the identifier values it quotes (raw, as typed, or canonical): warnings and dead
    letters are read by roles that may not see personal data."""
    for value in sorted((str(v).strip() for v in values if v and str(v).strip()), key=len, reverse=True):
        note = note.replace(value, "(withheld)")
    return note
