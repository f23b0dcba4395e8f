"""A small HTTP endpoint through which the process that owns an embedded chDB folder answers
everyone else's queries (chDB allows one process per folder). `omnihub query` uses it.

POST /query  {"sql": "...", "parameters": {...}}  ->  {"columns": [...], "rows": [[...], ...]}
Queries run with readonly=1: analysts read, only the sink writes.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


def _json_default(value):
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class QueryServer:
    def __init__(self, client, host: str, port: int):
        self.client = client
        server = self

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
                if self.path != "/query":
                    return self._answer(404, {"error": f"no such endpoint {self.path}; use POST /query"})
                try:
                    request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                    sql = request["sql"]
                except (ValueError, KeyError):
                    return self._answer(400, {"error": 'expected a JSON body {"sql": "...", "parameters": {...}}'})
                try:
                    result = server.client.query(sql, parameters=request.get("parameters") or None,
                                                 settings={"readonly": 1})
                except Exception as error:
                    return self._answer(400, {"error": str(error)})
                self._answer(200, {"columns": list(result.column_names), "rows": [list(r) for r in result.result_rows]})

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
