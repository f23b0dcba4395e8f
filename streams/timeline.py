"""Channel records to unified timeline events (pure functions, no I/O)."""
from __future__ import annotations

import json
import uuid

CUSTOMER_NAMESPACE = uuid.UUID("2b7d3f4e-9c1a-5e8b-a0f2-6f6d6e696875")


def web_order_identifiers(order: dict) -> list[dict]:
    identifiers = []
    if order.get("customer_account"):
        identifiers.append({"kind": "web_account", "value": order["customer_account"].strip()})
    if order.get("email"):
        identifiers.append({"kind": "email", "value": order["email"].strip().lower()})
    if order.get("phone"):
        identifiers.append({"kind": "phone", "value": "".join(ch for ch in order["phone"] if ch.isdigit() or ch == "+")})
    return identifiers


def provisional_customer_id(identifiers: list[dict]) -> str:
    """Deterministic id from the strongest identifier, so a replay yields the same id.

    Placeholder for identity resolution across channels (issue 4), which will re-key through merges."""
    first = identifiers[0]
    return str(uuid.uuid5(CUSTOMER_NAMESPACE, f"{first['kind']}:{first['value']}"))


def web_order_to_timeline(order: dict) -> dict:
    identifiers = web_order_identifiers(order)
    if not identifiers:
        raise ValueError("order carries no customer identifier")
    payload = {
        "lines": order["lines"],
        "shipping_cost_minor": order["shipping_cost_minor"],
        "discount_code": order["discount_code"],
    }
    return {
        "event_id": order["event_id"],
        "event_time": order["order_time"],
        "channel": "web",
        "event_type": "order",
        "customer_id": provisional_customer_id(identifiers),
        "source_id": order["order_id"],
        "identifiers": identifiers,
        "amount_minor": order["total_minor"],
        "currency": order["currency"],
        "payload_json": json.dumps(payload, separators=(",", ":")),
    }
