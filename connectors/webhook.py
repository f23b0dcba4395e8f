"""HTTP webhook source: a channel system POSTs one JSON record, a JSON array, or JSON Lines.

Answers:
- 200 {"accepted": n} once every record is acknowledged by Kafka;
- 422 {"accepted": n, "rejected": [{"index", "position", "reason"}]} when some records were rejected:
  those are in dead letters and the others are accepted, so a client must not resend it unchanged;
- 400 when the body is not JSON (the body goes to dead letters), 401 without the configured token,
  413 above max_body_bytes;
- 503 when Kafka did not acknowledge: nothing is counted, and resending is safe because event ids
  are deterministic (the same record gets the same id, which consumers deduplicate on).

A record resent after it was acknowledged (a client retrying after a timeout) is answered as
accepted and not published again, as long as its id is among the last RECENT_IDS ones; the window
is saved on a clean stop and loaded at start, so only a crashed webhook forgets it.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import uuid
from collections import OrderedDict
from pathlib import Path

from aiohttp import web
from kafka.errors import KafkaError as SyncKafkaError
from aiokafka.errors import KafkaError

from connectors.config import WebhookSource
from connectors.runtime import Connector, RunReport
from connectors.sources import SourceRecord
from infra.kafka import broker_id

log = logging.getLogger(__name__)

RECENT_IDS = 100_000


def parse_body(body: bytes, content_type: str, request_id: str) -> list[SourceRecord]:
    """The records of a request body; a body that is not JSON is one record with an error."""
    position = f"request {request_id}"
    if "ndjson" in content_type or "jsonl" in content_type or "json-seq" in content_type:
        items = []
        for index, line in enumerate(l for l in body.splitlines() if l.strip()):
            record = SourceRecord(f"{position} item {index}", line)
            try:
                record.value = json.loads(line)
            except ValueError as error:
                record.error = f"not valid JSON: {error}"
            items.append(record)
    else:
        try:
            payload = json.loads(body)
        except ValueError as error:
            return [SourceRecord(position, body, error=f"not valid JSON: {error}")]
        payload = payload if isinstance(payload, list) else [payload]
        items = [SourceRecord(f"{position} item {index}", json.dumps(value).encode(), value=value)
                 for index, value in enumerate(payload)]
    for record in items:
        if record.error is None and not isinstance(record.value, dict):
            record.error = f"expected a JSON object, got {type(record.value).__name__}"
    return items


class Webhook:
    def __init__(self, connector: Connector):
        source = connector.config.source
        assert isinstance(source, WebhookSource)
        self.connector, self.source = connector, source
        self.token: str | None = None
        if source.token_env:
            self.token = os.environ.get(source.token_env)
            if not self.token:
                raise ValueError(f"connector {connector.config.name}: environment variable {source.token_env} "
                                 "(source.token_env) is not set")
        self.report = RunReport(connector.config.name, "")
        self.recent_file = Path(connector.settings.data_dir) / "connectors" / f"{connector.config.name}.webhook-ids.json"
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.runner: web.AppRunner | None = None
        self.broker = ""
        self.lock = asyncio.Lock()  # one request's records settle before the next: counts stay exact

    @property
    def address(self) -> str:
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}{self.source.path}"

    async def start(self) -> "Webhook":
        self.broker = await asyncio.to_thread(broker_id, self.connector.bootstrap)
        if self.recent_file.is_file():
            saved = json.loads(self.recent_file.read_text())
            if isinstance(saved, dict) and saved.get("broker") == self.broker:
                self.recent = OrderedDict.fromkeys(saved["ids"])
            else:  # acknowledged by a broker that is not this one: a resend must be published again
                log.warning("%s: forgetting %d acknowledged record ids: they were acknowledged by another broker "
                            "(or one that lost its data), so resent records are published again",
                            self.connector.config.name, len(saved["ids"] if isinstance(saved, dict) else saved))
        await self.connector.start()
        app = web.Application(client_max_size=self.source.max_body_bytes)
        app.router.add_post(self.source.path, self.handle)
        app.router.add_get("/health", self.health)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.source.host, self.source.port).start()
        self.report.source = self.address
        log.info("%s: webhook listening on %s", self.connector.config.name, self.address)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        await self.connector.stop()
        self.recent_file.parent.mkdir(parents=True, exist_ok=True)
        self.recent_file.write_text(json.dumps({"broker": self.broker, "ids": list(self.recent)}))

    async def health(self, request: web.Request) -> web.Response:
        r = self.report
        return web.json_response({"connector": r.connector, "read": r.read, "accepted": r.accepted,
                                  "rejected": r.rejected, "resent": r.already_on_kafka, "reconciles": r.reconciles})

    async def handle(self, request: web.Request) -> web.Response:
        if self.token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        body = await request.read()
        records = parse_body(body, request.content_type or "", request_id)
        batch = RunReport(self.report.connector, self.report.source)
        async with self.lock:
            try:
                outcomes = [await self.connector.send(record, self.report.source, self.recent) for record in records]
                await self.connector.settle(outcomes, batch, {})
                for outcome in outcomes:
                    self.recent[outcome.record_id] = None
                    self.recent.move_to_end(outcome.record_id)
                while len(self.recent) > RECENT_IDS:
                    self.recent.popitem(last=False)
            except (KafkaError, SyncKafkaError, asyncio.TimeoutError) as error:
                log.warning("%s: request %s not acknowledged by Kafka: %s", self.report.connector, request_id, error)
                return web.json_response({"request_id": request_id, "error": f"Kafka did not acknowledge: {error}; "
                                          "resending is safe"}, status=503)
            self.report.read += len(records)
            self.report.accepted += batch.accepted
            self.report.rejected += batch.rejected
            self.report.already_on_kafka += batch.already_on_kafka
            for reason, n in batch.reasons.items():
                self.report.reasons[reason] = self.report.reasons.get(reason, 0) + n
        rejected = [{"index": i, "position": o.record.position, "reason": o.reason}
                    for i, o in enumerate(outcomes) if o.reason is not None]
        answer = {"request_id": request_id, "accepted": batch.accepted, "rejected": rejected}
        if not rejected:
            return web.json_response(answer, status=200)
        return web.json_response(answer, status=400 if len(records) == 1 and records[0].value is None else 422)


async def serve(connector: Connector, stop: asyncio.Event | None = None) -> RunReport:
    """Serve until stop is set (forever without one); returns the counts of everything received."""
    webhook = await Webhook(connector).start()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await webhook.stop()
    return webhook.report
