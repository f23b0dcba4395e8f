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
import itertools
import json
import logging
import os
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

from aiohttp import web
from kafka.errors import KafkaError as SyncKafkaError
from aiokafka.errors import KafkaError

from connectors.config import WebhookSource
from connectors.runtime import Connector, RunReport
from connectors.sources import SourceRecord, parse_json
from infra.kafka import broker_id

log = logging.getLogger(__name__)

RECENT_IDS = 100_000


JSON_TYPES = ("application/json", "text/json")
LINES_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
               "application/json-seq")
CHUNK_RECORDS = 1000  # records parsed and sent at a time: a large body never holds all its records parsed


def accepted_content_type(content_type: str) -> bool:
    return content_type in JSON_TYPES or content_type in LINES_TYPES or content_type.endswith("+json")


def parse_body(body: bytes, content_type: str, request_id: str) -> Iterator[SourceRecord]:
    """The records of a request body, one at a time; a body that is not JSON is one record with an error.
    Never raises, whatever the bytes (invalid UTF-8, any nesting depth, lone surrogates)."""
    position = f"request {request_id}"
    if content_type in LINES_TYPES:
        index = 0
        for line in body.splitlines():
            if not line.strip():
                continue
            record = SourceRecord(f"{position} item {index}", line)
            record.value, record.error = parse_json(line)
            index += 1
            yield _object_only(record)
        return
    payload, error = parse_json(body)
    if error is not None:
        yield SourceRecord(position, body, error=error)
        return
    for index, value in enumerate(payload if isinstance(payload, list) else [payload]):
        try:
            raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogateescape")
        except (RecursionError, ValueError):
            raw = body[:4096]
        yield _object_only(SourceRecord(f"{position} item {index}", raw, value=value))


def _object_only(record: SourceRecord) -> SourceRecord:
    if record.error is None and not isinstance(record.value, dict):
        record.error = f"expected a JSON object, got {type(record.value).__name__}"
    return record


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
        content_type = request.content_type or ""
        if not accepted_content_type(content_type):
            return web.json_response({"error": f"content type {content_type!r} is not taken here: send "
                                      "application/json (one record or an array) or application/x-ndjson"},
                                     status=415)
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        body = await request.read()  # above max_body_bytes, aiohttp answers 413
        batch = RunReport(self.report.connector, self.report.source)
        rejected: list[dict] = []
        whole_body_bad = False
        async with self.lock:
            try:
                records = parse_body(body, content_type, request_id)
                index = 0
                while True:
                    chunk = list(itertools.islice(records, CHUNK_RECORDS))
                    if not chunk:
                        break
                    outcomes = await self.connector.send_many(chunk, self.report.source, self.recent, by_content=True)
                    await self.connector.settle(outcomes, batch, {})
                    for outcome in outcomes:
                        self.recent[outcome.skip_key] = None
                        self.recent.move_to_end(outcome.skip_key)
                        if outcome.reason is not None:
                            rejected.append({"index": index, "position": outcome.record.position, "reason": outcome.reason})
                            whole_body_bad = outcome.record.position.endswith(request_id)  # not even one record in it
                        index += 1
                    del chunk, outcomes
                while len(self.recent) > RECENT_IDS:
                    self.recent.popitem(last=False)
            except (KafkaError, SyncKafkaError, asyncio.TimeoutError) as error:
                log.warning("%s: request %s not acknowledged by Kafka: %s", self.report.connector, request_id, error)
                return web.json_response({"request_id": request_id, "error": f"Kafka did not acknowledge: {error}; "
                                          "resending is safe"}, status=503)
            except Exception as error:  # a defect of ours, not of the record: say so, and resending stays safe
                log.exception("%s: request %s failed", self.report.connector, request_id)
                return web.json_response({"request_id": request_id, "error": f"{type(error).__name__}: {error}; "
                                          "resending is safe"}, status=503)
            finally:
                # What was acknowledged counts, even when a later chunk failed: the counts stay true.
                self.report.read += batch.accepted + batch.rejected
                self.report.accepted += batch.accepted
                self.report.rejected += batch.rejected
                self.report.already_on_kafka += batch.already_on_kafka
                for reason, n in batch.reasons.items():
                    self.report.reasons[reason] = self.report.reasons.get(reason, 0) + n
        answer = {"request_id": request_id, "accepted": batch.accepted, "rejected": rejected}
        if not rejected:
            return web.json_response(answer, status=200)
        return web.json_response(answer, status=400 if whole_body_bad else 422)


async def serve(connector: Connector, stop: asyncio.Event | None = None) -> RunReport:
    """Serve until stop is set (forever without one); returns the counts of everything received."""
    webhook = await Webhook(connector).start()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await webhook.stop()
    return webhook.report
