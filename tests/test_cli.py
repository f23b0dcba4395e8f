"""The `omnihub` command as a user runs it: separate processes, real servers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from infra.hub import child_environment
from tests.fixtures import channel_config

pytestmark = pytest.mark.integration


def omnihub(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=timeout)


def test_wrong_config_stops_with_the_setting_named(tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text('[kafka]\nbootstrap_server = "kafka:9092"\n[sink]\nbatch_max_rows = -5\n')
    result = omnihub("--config", str(config), "topics", "create")
    assert result.returncode != 0
    assert "kafka.bootstrap_server: unknown setting" in result.stderr
    assert "sink.batch_max_rows" in result.stderr and "OMNIHUB_SINK__BATCH_MAX_ROWS" in result.stderr
    assert "Traceback" not in result.stderr


def start_hub(env: dict, state_file, **popen: object) -> subprocess.Popen:
    """`omnihub run` in its own process, returned once it has written its state file."""
    hub = subprocess.Popen([sys.executable, "-m", "infra.cli", "run"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, **popen)
    deadline = time.monotonic() + 60
    while not state_file.exists():
        assert hub.poll() is None, hub.stdout.read()
        assert time.monotonic() < deadline, "hub did not start"
        time.sleep(0.1)
    return hub


def test_run_then_connector_and_query_from_other_processes(settings, tmp_path):
    # The hub process must own its own chDB folder: this test process already owns the shared one.
    own = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(update={"embedded_path": tmp_path / "hub-chdb"})})
    env = child_environment(own, own.kafka.bootstrap_servers)
    config = channel_config(own, tmp_path, "web-orders")  # before the hub: its worker reads the channel topics that exist
    state_file = own.data_dir / "hub.json"
    hub = start_hub(env, state_file)
    try:
        assert json.loads(state_file.read_text())["bootstrap_servers"] == own.kafka.bootstrap_servers

        result = omnihub("connectors", "run", str(config), env=env)
        assert result.returncode == 0, result.stderr
        assert "read 9 = accepted 5 + rejected 4 (reconciled)" in result.stdout
        assert "no time zone" in result.stdout and "not valid JSON" in result.stdout

        deadline = time.monotonic() + 60
        while True:
            result = omnihub("query", "SELECT count() AS orders FROM timeline_events FINAL WHERE channel = {c:String}",
                             "--param", "c=web", env=env)
            assert result.returncode == 0, result.stderr
            if result.stdout.split()[-1] == "5":
                break
            assert time.monotonic() < deadline, result.stdout
            time.sleep(0.5)
        campaigns = tmp_path / "campaigns.json"
        campaigns.write_text(json.dumps([{"campaign_id": "tv-best24", "name": "TV", "starts_at": "2026-11-20T00:00:00+01:00",
                                          "ends_at": "2026-11-21T00:00:00+01:00", "audience_segment": "best_customers",
                                          "discount_code": "BEST24", "media_cost": "185000.00", "currency": "EUR"}]))
        announced = omnihub("campaigns", "announce", str(campaigns), env=env)
        assert announced.returncode == 0, announced.stderr
        deadline = time.monotonic() + 60
        while "18500000" not in (loaded := omnihub("query", "SELECT campaign_id, media_cost_minor FROM campaigns FINAL", env=env)).stdout:
            assert time.monotonic() < deadline, loaded.stdout + loaded.stderr
            time.sleep(0.5)
        empty = omnihub("query", "SELECT 1 AS x, 'a' AS label WHERE 0", env=env)
        assert empty.returncode == 0 and empty.stdout.split()[:2] == ["x", "label"] and len(empty.stdout.splitlines()) == 2, empty.stdout
        named = omnihub("query", "operations_orders_per_hour", env=env)
        assert named.returncode == 0 and "web_orders" in named.stdout, named.stderr
        report = omnihub("report", "purchasing", env=env)   # the campaign: the latest announced one
        assert report.returncode == 0 and "campaign=tv-best24" in report.stdout.splitlines()[0], report.stdout + report.stderr
        assert "purchasing_sku_demand" in report.stdout and "units_during" in report.stdout
        assert omnihub("report", "astrology", env=env).returncode == 2
        # forgetting by email, from another process: done when the worker has answered and ClickHouse is clean
        deadline = time.monotonic() + 60
        while "bruno.leroy@example.org" not in omnihub("query", "SELECT identifiers FROM customer_identities FINAL", env=env).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        forgotten = omnihub("forget", "Bruno.Leroy@example.org", env=env)
        assert forgotten.returncode == 0, forgotten.stderr
        assert "forgotten: customer" in forgotten.stdout and "ClickHouse: their identities, event details and dead " \
            "letters are deleted" in forgotten.stdout, forgotten.stdout
        assert "bruno.leroy" not in omnihub("query", "SELECT identifiers FROM customer_identities FINAL", env=env).stdout
        refused = omnihub("query", "DROP TABLE timeline_events", env=env)
        assert refused.returncode != 0 and "refused: only reading statements" in refused.stderr
    finally:
        hub.send_signal(signal.SIGTERM)
        output, _ = hub.communicate(timeout=60)
    assert hub.returncode == 0, output
    assert "hub stopped" in output
    assert not state_file.exists()


def test_generate_then_load_every_channel_with_counts_reconciling(settings, tmp_path):
    env = child_environment(settings, settings.kafka.bootstrap_servers)
    out = tmp_path / "scenario"
    generated = omnihub("generate", "--out", str(out), "--events", "3000", "--customers", "300", env=env)
    assert generated.returncode == 0, generated.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    # the bundled configs publish to channel.* topics, which no other test uses
    loaded = omnihub("connectors", "run", "--all", "--source-dir", str(out), env=env, timeout=180)
    assert loaded.returncode == 0, loaded.stderr
    for name, expected in manifest["channels"].items():
        assert (f"{name}: read {expected['records']} = accepted {expected['valid']} + rejected {expected['malformed']} "
                f"(reconciled) from {out / expected['file']}") in loaded.stdout
    again = omnihub("connectors", "run", "--all", "--source-dir", str(out), env=env, timeout=180)
    assert again.stdout.count(": read 0 = accepted 0 + rejected 0 (reconciled)") == len(manifest["channels"]), again.stdout


def test_hub_killed_mid_load_then_restarted_stores_every_event_once(settings, tmp_path):
    """SIGKILL to the hub's whole process group (sink, query endpoint, Faust worker) while the sink works
    through a backlog: no offset commit, no clean shutdown, chDB's folder left as a crash leaves it. The
    restarted hub stores the rest; every event is there once."""
    import asyncio

    from tests.test_sink import produce_timeline

    count = 60_000
    own = settings.model_copy(update={
        "clickhouse": settings.clickhouse.model_copy(update={"embedded_path": tmp_path / "hub-chdb"}),
        "sink": settings.sink.model_copy(update={"batch_max_rows": 2_000})})
    env = child_environment(own, own.kafka.bootstrap_servers)
    asyncio.run(produce_timeline(own, count))
    state_file = own.data_dir / "hub.json"
    stored_query = "SELECT count() AS events, uniqExact(event_id) AS ids, sum(amount_minor) AS amount FROM timeline_events FINAL"

    def stored(sql: str = stored_query) -> list[int]:
        """Through the hub's query endpoint (what `omnihub query` uses), fast enough to catch the load midway."""
        import urllib.request

        url = json.loads(state_file.read_text())["query_url"] + "/query"
        request = urllib.request.Request(url, data=json.dumps({"sql": sql}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return [int(v or 0) for v in json.loads(response.read())["rows"][0]]

    hub = start_hub(env, state_file, start_new_session=True)  # its own group: killed whole
    try:
        while (at_kill := stored())[0] < count // 3:  # then kill wherever the sink is: fetching, inserting, committing
            assert hub.poll() is None, hub.stdout.read()
            time.sleep(0.01)
    finally:
        os.killpg(hub.pid, signal.SIGKILL)
        hub.wait()
    state_file.unlink()  # a killed hub cannot remove it
    hub = start_hub(env, state_file, start_new_session=True)  # its own group: killed whole
    try:
        deadline = time.monotonic() + 180
        while (after := stored())[0] < count:
            assert time.monotonic() < deadline, after
            time.sleep(1)
        time.sleep(2)  # a late duplicate would land within a batch interval
        final = stored()
        [physical] = stored("SELECT count() FROM timeline_events")
    finally:
        hub.send_signal(signal.SIGTERM)
        output, _ = hub.communicate(timeout=60)
    print(f"killed with {at_kill[0]:,} of {count:,} events stored; after restart {final[0]:,} events, "
          f"{physical:,} rows before deduplication")
    assert 0 < at_kill[0] < count, "killed before or after the load, not in the middle"
    assert final == [count, count, sum(100 + i for i in range(count))]
    assert hub.returncode == 0, output
    assert "+ refused by ClickHouse 0 (dead-lettered)" in output


def test_a_command_for_a_broker_that_is_gone_says_so_in_one_line(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    env = {**os.environ, "OMNIHUB_KAFKA__BOOTSTRAP_SERVERS": closed, "OMNIHUB_DATA_DIR": str(tmp_path)}
    result = omnihub("forget", "c-1", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: the broker at {closed} did not take the command"), result.stderr
