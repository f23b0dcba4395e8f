"""Channel events to unified timeline events (pure functions, no I/O)."""
from __future__ import annotations

import json
import uuid

CUSTOMER_NAMESPACE = uuid.UUID("2b7d3f4e-9c1a-5e8b-a0f2-6f6d6e696875")

# Identifiers that can name a person; a store terminal is shared by everyone at that till.
PERSONAL_KINDS = ("web_account", "loyalty_id", "email", "phone", "social_handle")


def timeline_identifiers(event: dict) -> list[dict]:
    """Identifiers as the timeline carries them: light clean-up only (trim, lower-case emails,
    platform:handle); full normalization belongs to identity resolution."""
    identifiers = []
    for identifier in event["identifiers"]:
        kind, value = identifier["kind"], identifier["value"].strip()
        if kind == "email":
            value = value.lower()
        elif kind == "phone":
            value = "".join(ch for ch in value if ch.isdigit() or ch == "+")
        elif kind == "social_handle":
            value = f"{(identifier.get('platform') or '').lower()}:{value.lstrip('@').lower()}"
        identifiers.append({"kind": kind, "value": value})
    return identifiers


def provisional_customer_id(event_id: str, identifiers: list[dict]) -> str:
    """Deterministic id from the strongest personal identifier, so a replay yields the same id; an
    event with none (an anonymous app session) gets an id of its own.

    Placeholder for identity resolution across channels (issue 4), which will re-key through merges."""
    for kind in PERSONAL_KINDS:
        for identifier in identifiers:
            if identifier["kind"] == kind:
                return str(uuid.uuid5(CUSTOMER_NAMESPACE, f"{kind}:{identifier['value']}"))
    return str(uuid.uuid5(CUSTOMER_NAMESPACE, f"event:{event_id}"))


def channel_event_to_timeline(event: dict) -> dict:
    identifiers = timeline_identifiers(event)
    details = {name: event[name] for name in ("lines", "shipping_cost_minor", "discount_minor", "campaign",
                                              "related_order_id", "status", "text", "attributes")
               if event.get(name) not in (None, [], {})}
    return {
        "event_id": event["event_id"],
        "event_time": event["occurred_at"],
        "channel": event["channel"],
        "event_type": event["event_type"],
        "customer_id": provisional_customer_id(event["event_id"], identifiers),
        "source_id": event["source_id"],
        "identifiers": identifiers,
        "amount_minor": event["total_minor"],
        "currency": event["currency"],
        "payload_json": json.dumps(details, separators=(",", ":"), ensure_ascii=False),
    }
