"""Pydantic models that validate records at the edge, before anything reaches a channel topic."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Namespace for deterministic event ids: the same source record always maps to the same id, so a
# re-read file or a replayed topic produces duplicates that sinks recognise.
EVENT_NAMESPACE = uuid.UUID("6f1c6f0e-4b1e-5c55-9d2a-6f6d6e696875")


def event_id(channel: str, source_id: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{channel}:{source_id}"))


def dead_letter(component: str, source: str, position: str, error: str | Exception, raw: bytes | None) -> dict:
    """The record for schemas/avro/dead_letter.avsc; an exception is described by its type and message."""
    if isinstance(error, Exception):
        error = f"{type(error).__name__}: {error}"
    return {"component": component, "source": source, "position": position, "error": error, "raw": raw or b"",
            "rejected_at": datetime.now(timezone.utc)}


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class WebOrderCustomer(_Strict):
    account_id: str | None = None
    email: str | None = None
    phone: str | None = None


class WebOrderLineRecord(_Strict):
    sku: str = Field(min_length=1)
    qty: int = Field(gt=0)
    unit_price: Decimal = Field(ge=0)
    unit_cost: Decimal | None = Field(default=None, ge=0)


class WebOrderRecord(_Strict):
    """One line of the web shop's JSON Lines order export."""

    order_id: str = Field(min_length=1)
    created_at: datetime
    customer: WebOrderCustomer
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    lines: list[WebOrderLineRecord] = Field(min_length=1)
    shipping_cost: Decimal = Field(default=Decimal(0), ge=0)
    discount_code: str | None = None
    total: Decimal = Field(ge=0)

    @field_validator("created_at")
    @classmethod
    def _needs_time_zone(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp has no time zone offset; the export must say which zone it is in")
        return value

    @model_validator(mode="after")
    def _needs_identifier(self) -> "WebOrderRecord":
        c = self.customer
        if not (c.account_id or c.email or c.phone):
            raise ValueError("customer has no identifier (account_id, email or phone)")
        return self

    def to_avro(self) -> dict:
        """The record for schemas/avro/web_order.avsc."""
        return {
            "event_id": event_id("web", self.order_id),
            "order_id": self.order_id,
            "order_time": self.created_at,
            "customer_account": self.customer.account_id or None,
            "email": self.customer.email or None,
            "phone": self.customer.phone or None,
            "currency": self.currency,
            "lines": [
                {
                    "sku": line.sku,
                    "quantity": line.qty,
                    "unit_price_minor": to_minor_units(line.unit_price, "unit_price"),
                    "unit_cost_minor": None if line.unit_cost is None else to_minor_units(line.unit_cost, "unit_cost"),
                }
                for line in self.lines
            ],
            "shipping_cost_minor": to_minor_units(self.shipping_cost, "shipping_cost"),
            "discount_code": self.discount_code or None,
            "total_minor": to_minor_units(self.total, "total"),
        }
