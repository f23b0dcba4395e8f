"""The example downstream app (examples/loyalty_alerts), a Faust app of its own, run against the embedded
broker beside a hub: a best customer's open ticket becomes an alert once the merge joining them is applied,
and their erasure deletes the alert downstream."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from click.testing import CliRunner

from infra.cli import cli
from infra.hub import Hub, child_environment
from infra.processes import stop_process
from tests.fixtures import channel_config
from connectors.runtime import run_connector
from tests.test_pipeline import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def order(number: int, email: str, phone: str | None, total: str) -> dict:
    customer = {"email": email} | ({"phone": phone} if phone else {})
    return {"order_id": f"W-LOY-{number}", "created_at": f"2026-11-20T1{number}:00:00+01:00", "customer": customer,
            "currency": "EUR", "lines": [{"sku": "TV-55-OLED", "qty": 1, "unit_price": total}], "shipping_cost": "0.00",
            "total": total}


def ticket(number: int, phone: str, status: str) -> dict:
    return {"ticket_id": f"T-LOY-{number}", "update_id": 1, "updated_at": "2026-11-20T12:30:00Z", "via": "phone",
            "status": status, "subject": "My TV does not turn on", "requester": {"phone": phone}, "assignee": "agent-1"}


def lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class AlertReader:
    """The app's output topic, read as a downstream consumer would (from the start, keys and tombstones)."""

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap, self.topic, self.records = bootstrap, topic, []

    async def read_until(self, condition, timeout: float, what: str, log: Path) -> None:
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            self.records = []
            deadline = time.monotonic() + timeout
            while not condition(self.records):
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {what}; alerts {self.records}\napp log:\n{log.read_text()[-3000:]}")
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    self.records += [(m.key.decode(), json.loads(m.value) if m.value is not None else None) for m in messages]
        finally:
            await consumer.stop()


def test_the_loyalty_app_applies_merges_and_honours_erasures(settings, tmp_path):
    alerts_topic = f"loyalty-alerts-{settings.streams.app_id[-8:]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOYALTY_BOOTSTRAP": settings.kafka.bootstrap_servers,
           "LOYALTY_APP_ID": f"loyalty-{settings.streams.app_id[-8:]}", "LOYALTY_DATA_DIR": str(tmp_path / "loyalty"),
           "LOYALTY_ALERTS_TOPIC": alerts_topic, "LOYALTY_PARTITIONS": str(settings.topics.partitions)}
    for name in ("customer_profiles", "customer_timeline", "identity_merges", "customer_erasures"):
        env[f"OMNIHUB_TOPIC_{name.upper()}"] = getattr(settings.topics, name)
    log = tmp_path / "loyalty.log"

    async def scenario() -> None:
        async with Hub(settings) as hub:
            with log.open("w") as output:
                app = subprocess.Popen([sys.executable, "-m", "examples.loyalty_alerts.app", "worker", "-l", "info"],
                                       env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
            try:
                reader = AlertReader(hub.bootstrap, alerts_topic)
                orders, tickets = channel_config(settings, tmp_path, "web-orders"), channel_config(settings, tmp_path, "support-tickets")
                phone = "+33611223344"
                # Two people as far as the hub knows: P, who spends (a best customer), and a caller with a ticket open.
                await run_connector(settings, hub.bootstrap, orders, lines(tmp_path / "o1.jsonl", [order(1, "pauline@example.com", None, "4999.00")]))
                await run_connector(settings, hub.bootstrap, tickets, lines(tmp_path / "t1.jsonl", [ticket(1, phone, "new")]))
                await wait_for(lambda: hub.client.query("SELECT count() FROM customer_profiles FINAL WHERE best_customer = 1 "
                                                        "AND deleted = 0").result_rows[0][0] == 1, 60, "one best customer", hub)
                await asyncio.sleep(5)
                await reader.read_until(lambda records: True, 10, "the topic", log)
                assert reader.records == []   # the caller is not (yet) a best customer
                # Pauline orders again giving her phone: the caller was Pauline, the hub merges them.
                await run_connector(settings, hub.bootstrap, orders, lines(tmp_path / "o2.jsonl", [order(2, "pauline@example.com", phone, "19.90")]))
                survivor = await wait_for(lambda: (rows := hub.client.query(
                    "SELECT DISTINCT current_id FROM identity_map FINAL").result_rows) and rows[0][0], 60, "the merge", hub)
                await reader.read_until(lambda records: any(v and v["ticket_id"] == "T-LOY-1" for _, v in records), 120,
                                        "the alert for the merged customer's ticket", log)
                assert len(reader.records) == 1, reader.records   # one alert, however the merge and profile interleave
                [(key, alert)] = reader.records
                assert key == alert["customer_id"] == survivor
                # Pauline asks to be forgotten: the app deletes what it holds and tombstones her alert downstream.
                forgotten = await asyncio.to_thread(CliRunner(env=child_environment(settings, hub.bootstrap)).invoke,
                                                    cli, ["forget", "pauline@example.com"])
                assert forgotten.exit_code == 0 and "forgotten: customer" in forgotten.output, forgotten.output
                await reader.read_until(lambda records: (survivor, None) in records, 120, "the tombstone of her alert", log)
                await wait_for(lambda: "erased" in log.read_text(), 30, "the app's erasure line")
                assert app.poll() is None, log.read_text()[-3000:]
            finally:
                stop_process(app, 20, "loyalty app")

    asyncio.run(scenario())
