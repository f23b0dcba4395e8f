"""Connector configs: the bundled six pass `check` on their samples; a wrong config is refused with
the file, line and field named. No Kafka is touched."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.config import ConfigError, bundled_configs, load_connector_config
from connectors.runtime import Connector, sample_records
from infra.settings import load_settings

BUNDLED = {path.stem: path for path in bundled_configs()}

# Each sample holds deliberately bad records; this is what each one is wrong about.
SAMPLE_REJECTIONS = {
    "web-orders": ["no customer identifier", "no time zone offset", "lines[0].quantity (from qty): 0 is below the minimum 1",
                   "not valid JSON"],
    "store-sales": ["unexpected value 'BITCOIN'", "expected 14 columns", "does not match format"],
    "support-tickets": ["no customer identifier", "unexpected value 'fax'", "unexpected value 'escalated'"],
    "social-messages": ["unexpected value 'retweet'", "no customer identifier", "not an epoch timestamp"],
    "app-sessions": ["unexpected value 'windows-phone'", "is below the minimum 0"],
    "returns": ["not an ISO 8601 timestamp", "no customer identifier"],
}


def test_six_channels_are_bundled_on_the_channel_pattern():
    assert set(BUNDLED) == set(SAMPLE_REJECTIONS)
    configs = [load_connector_config(path) for path in BUNDLED.values()]
    assert {c.source.type for c in configs} == {"file", "webhook"}
    assert {c.source_format for c in configs} >= {"jsonl", "csv", "json"}
    pattern = load_settings().topics.channel_pattern
    import re
    assert all(re.search(pattern, c.topic) for c in configs)


@pytest.mark.parametrize("name", sorted(SAMPLE_REJECTIONS))
def test_sample_maps_and_each_bad_record_is_rejected_with_its_reason(name):
    connector = Connector(load_settings(), "", BUNDLED[name])
    _, records = sample_records(connector)
    results = list(connector.preview(records))
    accepted = [event for _, event, reason in results if reason is None]
    reasons = [reason for _, _, reason in results if reason is not None]
    assert len(accepted) >= 3
    assert len(reasons) == len(SAMPLE_REJECTIONS[name])
    for expected, reason in zip(SAMPLE_REJECTIONS[name], reasons):
        assert expected in reason
    for event in accepted:
        assert event["channel"] == connector.config.channel and event["source_id"] and event["event_id"]
    assert len({e["event_id"] for e in accepted}) == len(accepted)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channel.yaml"
    path.write_text(text)
    return path


GOOD = """\
name: returns
channel: returns
topic: channel.returns
source:
  type: file
  path: returns.jsonl
fields:
  event_type: {const: return}
  source_id: return_id
  occurred_at: at
identifiers:
  - {kind: email, path: email}
"""


def test_a_minimal_config_loads(tmp_path):
    config = load_connector_config(write(tmp_path, GOOD))
    assert config.source_format == "jsonl" and config.key == "source_id"


@pytest.mark.parametrize("change, expected", [
    (("  path: returns.jsonl\n", "  path: returns.jsonl\n  pth: x\n"), ":7: source.pth: unknown key"),
    (("  occurred_at: at\n", "  occurred_at: {path: at, type: datetime}\n"), ":10: fields.occurred_at.type: Input should be"),
    (("  occurred_at: at\n", "  occurred_at: {path: at, timezone: Mars/Olympus}\n"), ":10: fields.occurred_at: Value error, unknown time zone"),
    (("  occurred_at: at\n", "  occured_at: at\n"), "fields.occured_at: not a field of schema channel_event"),
    (("  occurred_at: at\n", ""), "fields: schema channel_event requires 'occurred_at'"),
    (("  - {kind: email, path: email}\n", "  - {kind: fax, path: fax}\n"), ":12: identifiers.0.kind: Input should be"),
    (("  - {kind: email, path: email}\n", "  - {kind: social_handle, path: handle}\n"), ":12: identifiers.0: Value error, a social_handle needs its platform"),
    (("  source_id: return_id\n", "  source_id: {path: a, const: b}\n"), ":9: fields.source_id: Value error, give exactly one of path, const, join or derive"),
    (("  type: file\n", "  type: ftp\n"), ":5: source: Input tag 'ftp' found using 'type' does not match"),
    (("  event_type: {const: return}\n", "  event_type: {const: return\n"), ":9: not valid YAML"),
    (("  source_id: return_id\n", "  source_id: return_id\n  event_id: id\n"), ":10: fields.event_id: filled by the connector runtime"),
])
def test_a_wrong_config_names_the_line_and_field(tmp_path, change, expected):
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigError) as error:
        load_connector_config(write(tmp_path, GOOD.replace(old, new)))
    assert expected in str(error.value)
    assert str(tmp_path / "channel.yaml") in str(error.value)


def test_check_command_prints_records_and_rejects_and_fails_only_when_strict(tmp_path):
    def check(*args):
        return subprocess.run([sys.executable, "-m", "infra.cli", "connectors", "check", *args],
                              capture_output=True, text=True, timeout=60)

    result = check("store-sales", "--show", "1")
    assert result.returncode == 0, result.stderr
    assert "lines 2-3: accepted" in result.stdout and '"sku": "HDMI-2M"' in result.stdout
    assert "line 6: REJECTED: attributes.payment_method" in result.stdout
    assert "read 6 = accepted 3 + rejected 3" in result.stdout
    assert check("store-sales", "--strict").returncode == 1

    broken = write(tmp_path, GOOD.replace("  type: file\n", "  type: ftp\n"))
    result = check(str(broken))
    assert result.returncode == 1 and f"{broken}:5: source" in result.stderr and "Traceback" not in result.stderr


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    bad = (GOOD.replace("  occurred_at: at\n", "  occured_at: at\n")                       # misspelt field
           .replace("  type: file\n", "  type: file\n  pth: x\n")                            # unknown key
           .replace("  source_id: return_id\n", "  source_id: return_id\n  source_id: id\n"))  # written twice
    with pytest.raises(ConfigError) as error:
        load_connector_config(write(tmp_path, bad))
    message = str(error.value)
    assert "(4 problem(s))" in message, message
    for expected in (":6: source.pth: unknown key", ":11: fields.source_id: duplicate key (also on line 10",
                     ":12: fields.occured_at: not a field of schema channel_event",
                     "fields: schema channel_event requires 'occurred_at'"):
        assert expected in message, message


@pytest.mark.parametrize("fmt, expected", [
    ("%d/%m/%Y %Q", "'Q' is a bad directive"),
    ("%d/%m/%Y %", "stray %"),
    ("dd/mm/yyyy", "not a strptime pattern"),
])
def test_a_timestamp_format_that_cannot_parse_is_refused_when_the_config_loads(tmp_path, fmt, expected):
    with pytest.raises(ConfigError) as error:
        load_connector_config(write(tmp_path, GOOD.replace("  occurred_at: at\n", f"  occurred_at: {{path: at, format: '{fmt}'}}\n")))
    assert ":10: fields.occurred_at: Value error, format" in str(error.value) and expected in str(error.value)
    load_connector_config(write(tmp_path, GOOD.replace("  occurred_at: at\n", "  occurred_at: {path: at, format: '%d/%m/%Y %H:%M'}\n")))


def test_check_reads_a_json_document_export_at_its_configured_path(tmp_path):
    (tmp_path / "returns.json").write_text(json.dumps({"exported": "2026-11-21", "returns": [
        {"return_id": "RT-1", "at": "2026-11-21T10:00:00+01:00", "email": "a@x.com"},
        {"return_id": "RT-2", "at": "yesterday", "email": "b@x.com"},
        {"return_id": "RT-3", "at": "2026-11-21T11:00:00+01:00", "email": "c@x.com"}]}, indent=2))
    config = write(tmp_path, GOOD.replace("  path: returns.jsonl\n", "  path: returns.json\n  format: json\n  records_at: returns\n"))
    result = subprocess.run([sys.executable, "-m", "infra.cli", "connectors", "check", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "item 2: REJECTED: occurred_at" in result.stdout and "read 3 = accepted 2 + rejected 1" in result.stdout


TILL = """\
name: till
channel: store
topic: channel.till
source: {type: file, path: till.csv, delimiter: ";", group_rows_by: ticket}
fields:
  event_type: {const: receipt}
  source_id: ticket
  occurred_at: {path: date, format: "%d/%m/%Y %H:%M", timezone: Europe/Paris}
  lines: {path: rows, each: {sku: article, quantity: qte, unit_price_minor: {path: pu, decimal_separator: ","}}}
identifiers:
  - {kind: loyalty_id, path: carte}
"""


def test_check_warns_when_receipts_carry_no_amount_and_a_derived_total_fills_it(tmp_path):
    (tmp_path / "till.csv").write_text("ticket;date;article;qte;pu;carte\n"
                                       "T1;20/11/2026 10:00;A;2;10,05;C1\nT1;20/11/2026 10:00;B;1;0,99;C1\n"
                                       "T2;20/11/2026 11:00;A;1;10,05;\n")

    def check(text: str):
        config = tmp_path / "till.yaml"
        config.write_text(text)
        return subprocess.run([sys.executable, "-m", "infra.cli", "connectors", "check", str(config), "--show", "2"],
                              capture_output=True, text=True, timeout=60)

    bare = check(TILL)
    assert bare.returncode == 0, bare.stderr
    assert "event type receipt carries revenue but total_minor is not mapped" in bare.stderr
    assert "2 accepted receipt record(s) have no total_minor" in bare.stderr
    derived = check(TILL.replace("  lines:", "  total_minor: {derive: lines}\n  lines:"))
    assert derived.returncode == 0 and "warning" not in derived.stderr, derived.stderr
    assert '"total_minor": 2109' in derived.stdout and '"total_minor": 1005' in derived.stdout
