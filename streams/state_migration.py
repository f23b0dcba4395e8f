"""Resolution state written before identifiers were tokens (kind:value in clear) to the current form.

Without it, a worker upgraded over such state would match nobody it knew and give every returning
customer a new id, silently. The migration keys every personal identifier by its token, seals its
value under its own key (the `sealed` view, for profiles), and keeps every customer id as it was. The
caller writes the result to a new changelog and deletes the old one, whose records hold the values in
clear (a log cannot be rewritten in place).
"""
from __future__ import annotations

from typing import Any

from infra.vault import Vault
from schemas.identifiers import PERSONAL_KINDS, TOKEN_FORM

MARKER = "identifier_keys"   # meta key: "tokens" once the state holds no identifier in clear


def is_clear_key(key: str) -> bool:
    kind, _, value = key.partition(":")
    return kind in PERSONAL_KINDS and not TOKEN_FORM.fullmatch(value)


def tokenized_state(state: dict[str, dict[str, Any]], vault: Vault) -> dict[str, dict[str, Any]]:
    """The whole state (view -> key -> value) with identifiers as tokens; customer ids unchanged."""
    token_keys: dict[str, str] = {}

    def token_key(key: str) -> str:
        if not is_clear_key(key):
            return key
        if key not in token_keys:
            token_keys[key] = f"{key.partition(':')[0]}:{vault.token(key)}"
        return token_keys[key]

    migrated = {name: dict(view) for name, view in state.items()}
    for name in ("owners", "sightings"):
        migrated[name] = {token_key(key): value for key, value in state.get(name, {}).items()}
    migrated["clusters"] = {customer_id: {**cluster, "identifiers": [token_key(key) for key in cluster["identifiers"]]}
                            for customer_id, cluster in state.get("clusters", {}).items() if cluster is not None}
    sealed = dict(state.get("sealed", {}))
    with vault.batch():
        for clear, token in token_keys.items():
            sealed.setdefault(token, vault.seal(token, clear).hex())
    migrated["sealed"] = sealed
    migrated["meta"] = {**state.get("meta", {}), MARKER: "tokens"}
    return migrated


def needs_migration(state_meta: dict, owners_sample: list[str]) -> bool:
    return state_meta.get(MARKER) != "tokens" and any(is_clear_key(key) for key in owners_sample)
