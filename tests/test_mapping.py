"""Field mapping: paths, coercions, time zones, money, lists and identifiers, on hand-made records."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml

from connectors.config import ConnectorConfig
from connectors.mapping import MappingError, RecordMapper
from schemas.models import event_id

BASE = {"name": "t", "channel": "web", "topic": "channel.t", "source": {"type": "file", "path": "x.jsonl"}}


def mapper(fields: str, identifiers: str = "[]", **extra) -> RecordMapper:
    data = dict(BASE, fields={"event_type": {"const": "order"}, "source_id": "id", "occurred_at": "at",
                              **yaml.safe_load(fields)},
                identifiers=yaml.safe_load(identifiers), **extra)
    return RecordMapper(ConnectorConfig.model_validate(data))


RECORD = {"id": "W-1", "at": "2026-11-20T09:15:00+01:00"}


def test_nested_paths_constants_and_deterministic_event_id():
    m = mapper("{campaign: {path: promo.code}, text: {path: notes.1}, status: {const: new}}")
    event = m.map(RECORD | {"promo": {"code": " BEST24 "}, "notes": ["a", "b"]})
    assert (event["campaign"], event["text"], event["status"]) == ("BEST24", "b", "new")
    assert event["occurred_at"] == datetime(2026, 11, 20, 8, 15, tzinfo=timezone.utc)
    assert event["event_id"] == event_id("web", "W-1") and event["channel"] == "web" and event["connector"] == "t"


@pytest.mark.parametrize("spec, value, expected", [
    ("{path: v}", "899.00", 89900),
    ("{path: v}", 12.5, 1250),
    ("{path: v, amount: minor}", "1250", 1250),
    ("{path: v, decimal_separator: ','}", "1 234,50", 123450),
])
def test_money_in_decimals_or_minor_units(spec, value, expected):
    assert mapper(f"{{total_minor: {spec}}}").map(RECORD | {"v": value})["total_minor"] == expected


@pytest.mark.parametrize("value, reason", [("12.345", "more than 2 decimals"), ("twelve", "expected a number"),
                                           ("-1", "below the minimum 0")])
def test_bad_amounts_are_rejected_with_the_field_named(value, reason):
    with pytest.raises(MappingError, match=rf"total_minor \(from v\): .*{reason}"):
        mapper("{total_minor: {path: v, min: 0}}").map(RECORD | {"v": value})


@pytest.mark.parametrize("spec, value, expected", [
    ("{path: t, format: '%d/%m/%Y %H:%M', timezone: Europe/Paris}", "20/11/2026 21:20", "2026-11-20T20:20:00+00:00"),
    ("{path: t, format: '%d/%m/%Y %H:%M', timezone: Europe/Paris}", "20/07/2026 21:20", "2026-07-20T19:20:00+00:00"),
    ("{path: t, timezone: America/New_York}", "2026-11-20T09:00:00", "2026-11-20T14:00:00+00:00"),
    ("{path: t, timezone: America/New_York}", "2026-11-20T09:00:00Z", "2026-11-20T09:00:00+00:00"),
    ("{path: t, format: epoch_seconds}", 1795208400, "2026-11-20T21:00:00+00:00"),
    ("{path: t, format: epoch_millis}", "1795208400500", "2026-11-20T21:00:00.500000+00:00"),
])
def test_timestamp_formats_and_time_zones(spec, value, expected):
    event = mapper(f"{{occurred_at: {spec}}}").map({"id": "1", "t": value})
    assert event["occurred_at"].isoformat() == expected


def test_timestamp_without_offset_or_zone_is_rejected():
    with pytest.raises(MappingError, match="no time zone offset"):
        mapper("{}").map({"id": "1", "at": "2026-11-20 09:00:00"})


def test_regex_values_nulls_defaults_and_required():
    m = mapper("{related_order_id: {path: text, regex: '(W-\\d+)'}, status: {path: s, values: {o: open, c: closed}},"
               " campaign: {path: c, null_values: ['', 'none'], default: organic}, text: text}")
    event = m.map(RECORD | {"text": "where is W-1002?", "s": "c", "c": "none"})
    assert (event["related_order_id"], event["status"], event["campaign"]) == ("W-1002", "closed", "organic")
    assert m.map(RECORD | {"text": "hello", "s": "o"})["related_order_id"] is None
    with pytest.raises(MappingError, match="status \\(from s\\): unexpected value 'x'"):
        m.map(RECORD | {"s": "x"})
    with pytest.raises(MappingError, match="source_id \\(from id\\): missing"):
        m.map({"at": RECORD["at"], "id": ""})


def test_list_items_map_each_and_name_the_bad_item():
    m = mapper("{lines: {path: items, required: true, each: {sku: s, quantity: {path: q, min: 1}, unit_price_minor: p}}}")
    event = m.map(RECORD | {"items": [{"s": "A", "q": "2", "p": "1.50"}, {"s": "B", "q": 1, "p": 3}]})
    assert event["lines"] == [{"sku": "A", "quantity": 2, "unit_price_minor": 150},
                              {"sku": "B", "quantity": 1, "unit_price_minor": 300}]
    with pytest.raises(MappingError, match=r"lines\[1\]\.quantity \(from q\): expected a whole number"):
        m.map(RECORD | {"items": [{"s": "A", "q": 1, "p": 1}, {"s": "B", "q": "1.5", "p": 1}]})
    with pytest.raises(MappingError, match="lines \\(from items\\): missing"):
        m.map(RECORD | {"items": []})


def test_identifiers_with_platform_and_the_identifier_requirement():
    m = mapper("{}", "[{kind: email, path: e}, {kind: social_handle, path: h, platform: {path: p}},"
                     " {kind: store_terminal, join: [store, till]}]", require_identifier=True)
    event = m.map(RECORD | {"e": " A@B.C ", "h": "@al", "p": "instagram", "store": "PAR", "till": "T3"})
    assert event["identifiers"] == [{"kind": "email", "value": "A@B.C", "platform": None},
                                    {"kind": "social_handle", "value": "@al", "platform": "instagram"},
                                    {"kind": "store_terminal", "value": "PAR:T3", "platform": None}]
    assert [i["kind"] for i in m.map(RECORD | {"store": "PAR", "till": "T3"})["identifiers"]] == ["store_terminal"]
    with pytest.raises(MappingError, match="no customer identifier \\(tried e, h, store\\+till\\)"):
        m.map(RECORD | {"e": "", "store": "PAR"})


def test_attributes_are_text_and_a_nested_object_is_not_a_value():
    m = mapper("{}", attributes={"cart": {"path": "cart", "type": "bool"}, "n": {"path": "n", "type": "int"}, "o": "o"})
    assert m.map(RECORD | {"cart": "yes", "n": "7"})["attributes"] == {"cart": "true", "n": "7"}
    with pytest.raises(MappingError, match="attributes.o \\(from o\\): expected a single value"):
        m.map(RECORD | {"o": {"deep": 1}})


LINES = "lines: {path: rows, each: {sku: sku, quantity: qty, unit_price_minor: {path: price, decimal_separator: ','}}}"
ROWS = [{"sku": "A", "qty": "2", "price": "10,05"}, {"sku": "B", "qty": "1", "price": "0,99"}]


def test_a_receipt_without_a_total_gets_one_derived_from_its_lines():
    m = mapper("{total_minor: {derive: lines, minus: [voucher], decimal_separator: ','}, " + LINES + "}")
    assert m.map(RECORD | {"rows": ROWS})["total_minor"] == 2 * 1005 + 99
    assert m.map(RECORD | {"rows": ROWS, "voucher": "1,00"})["total_minor"] == 2 * 1005 + 99 - 100


def test_a_total_that_leaves_shipping_out_maps_as_cleanly_as_one_that_includes_it():
    excludes = mapper("{total_minor: {path: goods_total, plus: [shipping]}, shipping_cost_minor: shipping}")
    includes = mapper("{total_minor: total, shipping_cost_minor: shipping}")
    a = excludes.map(RECORD | {"goods_total": "100.00", "shipping": "4.90"})
    b = includes.map(RECORD | {"total": "104.90", "shipping": "4.90"})
    assert (a["total_minor"], a["shipping_cost_minor"]) == (b["total_minor"], b["shipping_cost_minor"]) == (10490, 490)
    assert excludes.map(RECORD | {"goods_total": "100.00"})["total_minor"] == 10000   # no shipping: nothing added
    assert excludes.map(RECORD)["total_minor"] is None                                  # no total: none made up


def test_a_derived_total_needs_lines_and_a_money_field(tmp_path):
    from connectors.config import ConfigError, load_connector_config, revenue_warnings

    base = "name: t\nchannel: store\ntopic: channel.t\nsource: {type: file, path: x.csv}\nfields:\n" \
           "  event_type: {const: receipt}\n  source_id: id\n  occurred_at: at\n"
    path = tmp_path / "c.yaml"
    path.write_text(base + "  total_minor: {derive: lines}\n  campaign: {path: c, plus: [d]}\n")
    with pytest.raises(ConfigError) as error:
        load_connector_config(path)
    assert "total_minor.derive: derive: lines needs the lines field mapped" in str(error.value)
    assert "campaign: derive, plus and minus apply to money fields" in str(error.value)
    path.write_text(base)
    assert "event type receipt carries revenue but total_minor is not mapped" in revenue_warnings(load_connector_config(path))[0]
    path.write_text(base + "  total_minor: total\n")
    assert revenue_warnings(load_connector_config(path)) == []
