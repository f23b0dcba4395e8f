"""ClickHouse's HTTP interface, the part that clients use to read, answered for embedded chDB.

chDB runs inside the hub, so no server listens on ClickHouse's port; the hub's query endpoint answers the
subset of ClickHouse's HTTP interface that clickhouse-connect, curl, DBeaver and Grafana's ClickHouse source
send to read: GET /ping, and GET or POST / with the query in `query=` or the body (both: joined), a
FORMAT clause or `default_format`, parameters as `param_<name>`, `database`, and settings that are safe in
read-only (formats, time zones, lower limits). Every statement goes through the same checks and limits as
`omnihub query` (sinks/read_only.py). Errors come back as ClickHouse writes them: "Code: N. DB::Exception:
..." with the X-ClickHouse-Exception-Code header, so clients raise their usual errors.
"""
from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

# What clients send that concerns the connection, not the query: accepted and not applied.
TRANSPORT_PARAMETERS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check",
    "user", "password", "quota_key", "compress", "decompress", "enable_http_compression", "buffer_size",
    "wait_end_of_query", "client_protocol_version", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close", "role",
    "http_zlib_compression_level", "http_native_compression_disable_checksumming_on_decompress",
}
# Settings that change how a result is written or read, never what the query may touch.
SAFE_SETTING = re.compile(
    r"^(output_format_\w+|format_\w+|date_time_output_format|date_time_input_format|session_timezone|"
    r"max_block_size|extremes|join_use_nulls|cast_string_to_dynamic_use_inference|"
    r"input_format_\w+|precise_float_parsing|"
    # limits: applied only when lower than the hub's (sinks/read_only.py)
    r"max_execution_time|max_memory_usage|max_result_rows|max_threads|result_overflow_mode)$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

READONLY = 164
AUTHENTICATION_FAILED = 516
UNKNOWN_SETTING = 115
SYNTAX_ERROR = 62


class ClickHouseError(Exception):
    """An answer in ClickHouse's error form."""

    def __init__(self, code: int, message: str, name: str, status: int = 500):
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")
        self.code = code
        self.status = status


@dataclass
class ClickHouseRequest:
    sql: str
    database: str | None
    default_format: str
    parameters: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    query_id: str = ""


def parse_request(method: str, path: str, body: bytes) -> ClickHouseRequest:
    """The query, its parameters and settings, as ClickHouse reads them from a request."""
    values = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
    text = body.decode("utf-8", errors="replace") if method == "POST" else ""
    sql = "\n".join(part for part in (values.get("query", ""), text) if part.strip())
    if not sql.strip():
        raise ClickHouseError(SYNTAX_ERROR, "Empty query", "SYNTAX_ERROR", 400)
    if re.match(r"\s*INSERT\b", sql, re.IGNORECASE):  # what follows its FORMAT is data, not SQL to parse
        raise ClickHouseError(READONLY, "refused: INSERT is not answered here; this endpoint only reads "
                              "(only the hub's sink writes)", "READONLY", 403)
    parameters, settings = {}, {}
    for name, value in values.items():
        if name.startswith("param_"):
            parameters[name[len("param_"):]] = value
        elif name in TRANSPORT_PARAMETERS:
            continue
        elif name == "readonly":
            if value not in ("1", "2"):
                raise ClickHouseError(READONLY, "this endpoint answers read-only: readonly cannot be lowered",
                                      "READONLY", 403)
        elif NAME.match(name) and SAFE_SETTING.match(name):
            settings[name] = value
        else:
            raise ClickHouseError(READONLY, f"setting {name} is not accepted here: only format, time zone and lower "
                                  "limit settings are (the hub's analysts' endpoint is read-only)", "READONLY", 403)
    return ClickHouseRequest(sql, values.get("database") or None, values.get("default_format") or "TabSeparated",
                             parameters, settings, values.get("query_id", ""))


def decoded_body(body: bytes, content_encoding: str) -> bytes:
    """A request body as sent with Content-Encoding (clickhouse-connect compresses what it posts with lz4)."""
    encoding = content_encoding.strip().lower()
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        import gzip
        return gzip.decompress(body)
    if encoding == "deflate":
        import zlib
        return zlib.decompress(body)
    if encoding == "lz4":
        import lz4.frame
        return lz4.frame.decompress(body)
    raise ClickHouseError(SYNTAX_ERROR, f"request body encoding {encoding!r} is not read here "
                          "(identity, gzip, deflate, lz4 are)", "UNKNOWN_FORMAT", 400)


def authorized(token: str | None, headers, path: str) -> bool:
    """With clickhouse.query_token set, the token as a bearer, or as the password ClickHouse clients send
    (basic auth, X-ClickHouse-Key, or `password=`); any user name."""
    if not token:
        return True
    offered = []
    authorization = headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        offered.append(authorization[len("Bearer "):])
    elif authorization.startswith("Basic "):
        try:
            offered.append(base64.b64decode(authorization[len("Basic "):]).decode().split(":", 1)[1])
        except (ValueError, IndexError):
            pass
    offered.append(headers.get("X-ClickHouse-Key", ""))
    offered.append(dict(parse_qsl(urlsplit(path).query)).get("password", ""))
    return any(hmac.compare_digest(candidate.encode(), token.encode()) for candidate in offered if candidate)


def error_from_engine(error: Exception) -> ClickHouseError:
    """chDB's exception text carries ClickHouse's own "Code: N. DB::Exception: ..." form: keep it."""
    text = str(error)
    match = re.search(r"Code: (\d+)\. DB::Exception: (.*?)(?: \((\w+)\))?\.?\s*$", text, re.S)
    if not match:
        return ClickHouseError(1001, text, "STD_EXCEPTION")
    code = int(match.group(1))
    status = 403 if code == READONLY else 400 if code in (SYNTAX_ERROR, 46, 47, 60, 81, 456, 26, 53) else 500
    return ClickHouseError(code, match.group(2).rstrip("."), match.group(3) or "EXCEPTION", status)
