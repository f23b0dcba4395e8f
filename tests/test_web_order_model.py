import pytest
from pydantic import ValidationError

from schemas.models import WebOrderRecord, event_id, to_minor_units
from tests.orders_fixture import web_order


def test_valid_order_maps_to_minor_units_and_stable_event_id():
    raw = web_order(7) | {"shipping_cost": "5.90", "total": "12.40"}
    raw["lines"] = [{"sku": "HDMI", "qty": 2, "unit_price": "3.25", "unit_cost": "1.10"}]
    avro = WebOrderRecord.model_validate(raw).to_avro()
    assert avro["lines"][0]["unit_price_minor"] == 325 and avro["lines"][0]["unit_cost_minor"] == 110
    assert avro["shipping_cost_minor"] == 590 and avro["total_minor"] == 1240
    assert avro["event_id"] == event_id("web", raw["order_id"]) == WebOrderRecord.model_validate(raw).to_avro()["event_id"]
    assert avro["event_id"] != event_id("web", "another order")


@pytest.mark.parametrize("change, reason", [
    ({"created_at": "2026-11-20T09:00:00"}, "no time zone"),
    ({"customer": {}}, "no identifier"),
    ({"lines": []}, "at least 1 item"),
    ({"currency": "euro"}, "currency"),
    ({"order_id": ""}, "order_id"),
])
def test_invalid_orders_are_refused_with_a_reason(change, reason):
    with pytest.raises(ValidationError, match=reason):
        WebOrderRecord.model_validate(web_order(1) | change)


def test_amount_with_more_than_two_decimals_is_refused_not_rounded():
    assert to_minor_units("19.99", "total") == 1999
    with pytest.raises(ValueError, match="more than 2 decimals"):
        to_minor_units("19.999", "total")
