"""A small HTTP endpoint through which the process that owns an embedded chDB folder answers
everyone else's queries (chDB allows one process per folder). `omnihub query` uses it.

POST /query  {"sql": "...", "parameters": {...}}  ->  {"columns": [...], "rows": [[...], ...]}
GET|POST /?query=...  ClickHouse's own HTTP interface (sinks/clickhouse_http.py), GET /ping: so that
clickhouse-connect, curl, DBeaver or Grafana reach embedded ClickHouse as they reach a server.
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

from sinks.clickhouse_http import (AUTHENTICATION_FAILED, READONLY, ClickHouseError, authorized, decoded_body,
                                   error_from_engine, parse_request)
from sinks.read_only import RefusedQuery, run_read_only, run_read_only_raw

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

            def _answer_bytes(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                """The request body, sent with a length or in chunks (clickhouse-connect streams inserts)."""
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)

            def _clickhouse(self, method: str) -> None:
                """ClickHouse's HTTP interface: answers and errors in ClickHouse's own forms."""
                body = self._body() if method == "POST" else b""
                try:
                    body = decoded_body(body, self.headers.get("Content-Encoding", ""))
                    if not authorized(token, self.headers, self.path):
                        raise ClickHouseError(AUTHENTICATION_FAILED, "wrong password or token (clickhouse.query_token)",
                                              "AUTHENTICATION_FAILED", 403)
                    request = parse_request(method, self.path, body)
                    try:
                        with running:
                            data, fmt = run_read_only_raw(settings, request.sql, request.parameters, request.default_format,
                                                          request.database, request.settings)
                    except RefusedQuery as error:
                        raise ClickHouseError(READONLY, f"refused: {error}", "READONLY", 403) from None
                    except ClickHouseError:
                        raise
                    except Exception as error:
                        raise error_from_engine(error) from None
                except ClickHouseError as error:
                    return self._answer_bytes(error.status, f"{error}\n".encode(), {
                        "Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": str(error.code)})
                self._answer_bytes(200, data, {"Content-Type": "application/octet-stream" if fmt in ("Native", "RowBinary")
                                               else "text/plain; charset=UTF-8", "X-ClickHouse-Format": fmt,
                                               "X-ClickHouse-Timezone": "UTC", "X-ClickHouse-Query-Id": request.query_id,
                                               "X-ClickHouse-Server-Display-Name": "omnihub-embedded"})

            def do_GET(self):
                if self.path.split("?", 1)[0] in ("/ping", "/replicas_status"):
                    return self._answer_bytes(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
                if self.path.split("?", 1)[0] == "/":
                    return self._clickhouse("GET")
                self._answer(404, {"error": f"no such endpoint {self.path}; use POST /query, or / as ClickHouse's HTTP interface"})

            def do_POST(self):
                if self.path.split("?", 1)[0] == "/":
                    return self._clickhouse("POST")
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
