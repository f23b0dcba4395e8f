"""A small HTTP endpoint through which the process that owns an embedded chDB folder answers
everyone else's queries (chDB allows one process per folder). `omnihub query` uses it.

POST /query  {"sql": "...", "parameters": {...}}  ->  {"columns": [...], "rows": [[...], ...]}
Each query runs in a session of its own, one read statement, with limits (sinks/read_only.py): analysts
read, only the sink writes, and nothing sent here reaches the sink's session. Bound to loopback unless
configured; with clickhouse.query_token set, requests carry `Authorization: Bearer <token>`.
"""
from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sinks.read_only import RefusedQuery, run_read_only

log = logging.getLogger(__name__)


def _json_default(value):
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class QueryServer:
    def __init__(self, settings, host: str, port: int):
        self.settings = settings
        token = settings.clickhouse.query_token
        # Analysts' queries beyond this many wait: the machine's cores are also the loading's.
        running = threading.BoundedSemaphore(settings.clickhouse.query_max_concurrent)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # keep request lines out of the console
                log.debug(fmt, *args)

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body, default=_json_default).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                if token and not hmac.compare_digest(self.headers.get("Authorization", "").encode(),
                                                     f"Bearer {token}".encode()):
                    return self._answer(401, {"error": "missing or wrong bearer token (clickhouse.query_token)"})
                if self.path != "/query":
                    return self._answer(404, {"error": f"no such endpoint {self.path}; use POST /query"})
                try:
                    request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                    sql = request["sql"]
                except (ValueError, KeyError):
                    return self._answer(400, {"error": 'expected a JSON body {"sql": "...", "parameters": {...}}'})
                try:
                    with running:
                        columns, rows = run_read_only(settings, sql, request.get("parameters") or None)
                except RefusedQuery as error:
                    return self._answer(403, {"error": f"refused: {error}"})
                except Exception as error:
                    return self._answer(400, {"error": str(error)})
                self._answer(200, {"columns": columns, "rows": rows})

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="omnihub-query", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "QueryServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
