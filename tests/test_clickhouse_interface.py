"""ClickHouse's HTTP interface on a running embedded hub: clickhouse-connect, as a client, gets what
`omnihub query` gets, and cannot write."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from infra.cli import _read_only_query
from sinks.named_queries import named_query, query_names, query_parameters
from sinks.query_server import _json_default
from tests.fixtures import channel_config, write_web_orders
from tests.test_pipeline import wait_for

pytestmark = pytest.mark.integration


def client_for(running):
    import clickhouse_connect

    host, port = running.hub.query_server.httpd.server_address[:2]
    return clickhouse_connect.get_client(host=host, port=port, database=running.settings.clickhouse.database)


def query_arguments(running) -> dict:
    customer = running.hub.client.query("SELECT customer_id FROM customer_profiles FINAL WHERE deleted = 0 "
                                        "ORDER BY events DESC, customer_id LIMIT 1").result_rows[0][0]
    campaign = json.loads((running.scenario / "campaigns.json").read_text())[0]["campaign_id"]
    return {"campaign": campaign, "capacity": "40", "customer": customer}


def as_json(rows) -> list:
    """Rows as the hub's JSON answers carry them (exact decimals and times as text)."""
    return json.loads(json.dumps([list(row) for row in rows], default=_json_default))


def test_clickhouse_connect_runs_every_department_query_as_omnihub_query_does(loaded_hub):
    client = client_for(loaded_hub)
    arguments = query_arguments(loaded_hub)
    compared = 0
    for name in query_names():
        parameters = {key: arguments[key] for key in query_parameters(name)}
        _, expected = _read_only_query(loaded_hub.settings, named_query(name), parameters)
        result = client.query(named_query(name), parameters=parameters)
        assert as_json(result.result_rows) == expected, name
        compared += bool(expected)
    assert compared >= len(query_names()) - 2  # the data gives nearly every query rows to compare


def test_plain_http_clients_read_with_formats_and_parameters(loaded_hub):
    base = loaded_hub.hub.query_server.address
    with urllib.request.urlopen(base + "/ping") as answer:
        assert answer.read() == b"Ok.\n"
    database = loaded_hub.settings.clickhouse.database
    url = (f"{base}/?database={database}&param_channel=web&query=" +
           urllib.request.quote("SELECT count() AS n FROM timeline_events FINAL WHERE channel = {channel:String} FORMAT JSONEachRow"))
    with urllib.request.urlopen(url) as answer:
        web = json.loads(answer.read())["n"]
    assert web == loaded_hub.hub.client.query("SELECT count() FROM timeline_events FINAL WHERE channel = 'web'").result_rows[0][0] > 0
    request = urllib.request.Request(f"{base}/?database={database}&default_format=CSVWithNames", method="POST",
                                     data=b"SELECT channel, count() AS n FROM timeline_events FINAL GROUP BY channel ORDER BY channel")
    with urllib.request.urlopen(request) as answer:
        lines = answer.read().decode().splitlines()
    assert lines[0] == '"channel","n"' and any(line.startswith('"web",') for line in lines)


def test_writes_through_the_interface_are_refused_and_loading_continues(loaded_hub, tmp_path):
    from clickhouse_connect.driver.exceptions import DatabaseError

    client = client_for(loaded_hub)
    before = loaded_hub.hub.client.query("SELECT count() FROM timeline_events FINAL").result_rows[0][0]
    for write in (lambda: client.command("INSERT INTO timeline_events (event_id) VALUES ('x')"),
                  lambda: client.insert("campaigns", [["c", "n"]], column_names=["campaign_id", "name"]),
                  lambda: client.command("DROP TABLE timeline_events"),
                  lambda: client.query("SELECT * FROM file('/etc/passwd', 'LineAsString')")):
        with pytest.raises(DatabaseError) as refused:
            write()
        assert "164" in str(refused.value) and "READONLY" in str(refused.value)
    for path in ("/?readonly=0&query=SELECT%201", "/?max_execution_time=100000&allow_ddl=1&query=SELECT%201"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(loaded_hub.hub.query_server.address + path)
        assert refused.value.code == 403 and refused.value.headers["X-ClickHouse-Exception-Code"] == "164"
    settings = loaded_hub.settings
    config = channel_config(settings, tmp_path, "web-orders")
    orders = write_web_orders(tmp_path / "more.jsonl", 25, start=900_000)
    from connectors.runtime import run_connector

    report = loaded_hub.call(run_connector(settings, loaded_hub.hub.bootstrap, config, orders))
    assert report.accepted == 25
    loaded_hub.call(wait_for(lambda: loaded_hub.hub.client.query("SELECT count() FROM timeline_events FINAL").result_rows[0][0]
                             >= before + 25, 120, "the new orders in ClickHouse", loaded_hub.hub))
    assert client.query("SELECT count() FROM timeline_events FINAL").result_rows[0][0] == before + 25
