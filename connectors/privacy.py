"""Personal data sealed at the connector, before anything reaches Kafka (keys in infra/vault.py).

A channel topic is a log nobody can rewrite: a mapped event goes out with each personal identifier as
its token (a keyed hash of its canonical form) and its canonical value sealed under that identifier's
own key, and with what it says about the person (the identifiers as written, free text, channel
attributes) sealed for the keys of the identifiers it carries. Forgetting a person destroys those keys:
every copy on the topic is then unreadable. A dead letter's raw record is sealed the same way, for the
identifiers found in it.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import orjson

from infra.settings import Settings
from infra.vault import open_vault
from schemas.identifiers import PERSONAL_KINDS, normalize_all, withheld

# Linear in the text: a match starts only where a run of local-part characters starts, and no run is given
# back. `[\w.+-]+@...` tried every position of a run and scanned to its end from each: quadratic, and a
# dead letter's raw record of a megabyte held its file connector for half an hour (tests/faults/hostile_inputs.py).
EMAIL_IN_TEXT = re.compile(r"(?<![\w.+-])[\w.+-]++@[\w-]++(?:\.[\w-]++)+")
PHONE_IN_TEXT = re.compile(r"(?<![\w+])(?:\+|00)?\d[\d .-]{7,16}\d(?!\w)")
SEALED_CACHE_MAX = 200_000


class EdgeSealer:
    def __init__(self, settings: Settings):
        self.vault = open_vault(settings)
        rules = settings.identity
        self.region, self.fallback = rules.default_region, tuple(rules.phone_fallback_regions)
        self.blocked = {value.lower() for value in rules.blocked_values}
        self._token = lru_cache(maxsize=SEALED_CACHE_MAX)(self.vault.token)
        self._sealed: dict[str, bytes] = {}
        self._read_cached = lru_cache(maxsize=SEALED_CACHE_MAX)(self._read_value)  # a person's identifiers come back

    def _read(self, raw: dict) -> tuple[str | None, str | None, str | None]:
        """(token key, canonical kind:value, note without the value) of one identifier as mapped."""
        return self._read_cached(raw["kind"], raw["value"], raw.get("platform"))

    def _read_value(self, kind: str, value: str, platform: str | None) -> tuple[str | None, str | None, str | None]:
        raw = {"kind": kind, "value": value, "platform": platform}
        identifiers, notes = normalize_all([raw], self.region, self.blocked, self.fallback)
        note = "; ".join(withheld(n, [raw["value"], *(i.value for i in identifiers)]) for n in notes) or None
        if not identifiers:
            return None, None, note
        canonical = identifiers[0].key
        return f"{raw['kind']}:{self._token(canonical)}", canonical, note

    def _sealed_value(self, key: str, canonical: str) -> bytes:
        sealed = self._sealed.get(key)
        if sealed is None:
            if len(self._sealed) >= SEALED_CACHE_MAX:
                self._sealed.clear()
            sealed = self._sealed[key] = self.vault.seal(key, canonical)
        return sealed

    def forget_sealed(self, subjects: list[str]) -> None:
        """Drop what was sealed under these subjects' keys: another process stored different keys first."""
        for subject in subjects:
            self._sealed.pop(subject, None)

    def keys_in_text(self, text: str) -> list[str]:
        """Token keys of the emails and phone numbers written in a text (a ticket, a raw record)."""
        found = [{"kind": "email", "value": m.group(0), "platform": None} for m in EMAIL_IN_TEXT.finditer(text)]
        found += [{"kind": "phone", "value": m.group(0), "platform": None} for m in PHONE_IN_TEXT.finditer(text)]
        return [key for raw in found if (key := self._read(raw)[0]) is not None]

    def seal_event(self, event: dict) -> dict:
        """The event as its channel topic carries it."""
        items, keys, written = [], [], []
        for raw in event["identifiers"]:
            if raw["kind"] not in PERSONAL_KINDS:  # a store terminal names a till, not a person
                items.append(raw)
                continue
            key, canonical, note = self._read(raw)
            written.append({"kind": raw["kind"], "value": raw["value"], "platform": raw.get("platform")})
            items.append({"kind": raw["kind"], "value": "", "platform": raw.get("platform"),
                          "token": key.partition(":")[2] if key else None,
                          "sealed": self._sealed_value(key, canonical) if key else None, "note": note})
            if key:
                keys.append(key)
        text, attributes = event.get("text"), event.get("attributes") or {}
        subjects = keys + (self.keys_in_text(text) if text else [])
        if not subjects:  # names nobody: no one can ask for it to be forgotten, and it stays readable
            return {**event, "identifiers": items}
        personal = orjson.dumps({"identifiers": written, "text": text, "attributes": attributes})
        return {**event, "identifiers": items, "text": None, "attributes": {},
                "sealed_personal": self.vault.seal_for(subjects, personal)}

    def seal_raw(self, raw: bytes, identifiers: list[dict[str, Any]] | None = None) -> tuple[bytes, list[str]]:
        """(a dead letter's raw record, sealed for the identifiers in it; their token keys). A record that
        names nobody recognisable stays as it was, for whoever must fix it."""
        keys = [key for item in identifiers or [] if item["kind"] in PERSONAL_KINDS and (key := self._read(item)[0])]
        keys += self.keys_in_text(raw.decode("utf-8", "replace"))
        keys = list(dict.fromkeys(keys))
        return (self.vault.seal_for(keys, raw), keys) if keys else (raw, [])
