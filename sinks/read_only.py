"""Analysts' SQL: one read statement per request, in a ClickHouse session of its own, with limits.

The sink's session is the sink's alone: an analyst's query runs on a client opened for it and closed
after it (on embedded chDB a separate connection handle, whose SETs and USE stay in it), so nothing an
analyst sends can make loading read-only, move it to another database or hold its lock.

Before running, ClickHouse's own parser (EXPLAIN AST) decides what the statement is:
- exactly one statement, of a reading kind: SELECT (WITH, UNION...), SHOW, DESCRIBE, EXPLAIN;
- no INTO OUTFILE (readonly=1 does not stop it: it writes the hub user's files);
- no table function other than generators (numbers, zeros, values...): file, url, s3, remote, mysql
  and the others read or write outside the database; nor the scalar file() function.
Then it runs with readonly=1 (set last, so the query cannot change the limits: its SETTINGS clause
is refused) and the configured limits on time, memory, result rows and threads.
"""
from __future__ import annotations

import queue
import re
import threading
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path

import clickhouse_connect
import sqlparse
from clickhouse_connect.driver.exceptions import DatabaseError

from infra.clickhouse import _dsn
from infra.settings import Settings

READ_KINDS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "DescribeQuery", "Explain")
GENERATOR_TABLE_FUNCTIONS = {"numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generateRandom",
                             "generate_series", "generateSeries", "null", "view", "viewIfPermitted"}
FILE_FUNCTIONS = {"file"}


class RefusedQuery(ValueError):
    """The statement is not one an analyst may run here; the message says why."""


@dataclass
class Node:
    depth: int
    text: str

    @property
    def kind(self) -> str:
        return self.text.split(" ", 1)[0]


def _ast(lines: list[str]) -> list[Node]:
    return [Node(len(line) - len(line.lstrip(" ")), line.strip()) for line in lines if line.strip()]


def _children(nodes: list[Node], index: int) -> list[Node]:
    depth, children = nodes[index].depth, []
    for node in nodes[index + 1:]:
        if node.depth <= depth:
            break
        if node.depth == depth + 1:
            children.append(node)
    return children


def check_ast(lines: list[str]) -> None:
    """Raise RefusedQuery unless the EXPLAIN AST output describes one allowed read statement."""
    nodes = _ast(lines)
    if not nodes:
        raise RefusedQuery("empty statement")
    top = nodes[0].kind
    if top not in READ_KINDS and not top.startswith("Show"):
        raise RefusedQuery(f"only reading statements are answered here (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN); "
                           f"this one is {top}")
    for index, node in enumerate(nodes):
        if node.kind in ("SelectWithUnionQuery", "Explain") and any(
                child.kind == "Literal" for child in _children(nodes, index)):
            raise RefusedQuery("INTO OUTFILE is not allowed: it writes files on the hub's machine")
        if node.kind == "TableExpression":
            for child in _children(nodes, index):
                name = child.text.split(" ")[1] if child.kind == "Function" and " " in child.text else ""
                if child.kind == "Function" and name not in GENERATOR_TABLE_FUNCTIONS:
                    raise RefusedQuery(f"table function {name}() is not allowed: it reads or writes outside "
                                       "the database (allowed: " + ", ".join(sorted(GENERATOR_TABLE_FUNCTIONS)) + ")")
        if node.kind == "Function" and node.text.split(" ")[1:2] and node.text.split(" ")[1] in FILE_FUNCTIONS:
            raise RefusedQuery(f"function {node.text.split(' ')[1]}() is not allowed: it reads the hub's files")


# Linear, as connectors/privacy.py EMAIL_IN_TEXT: the plain `\s+FORMAT...` scanned a run of whitespace from each
# of its positions (a statement with 40,000 spaces took 5 s).
TRAILING_FORMAT = re.compile(r"(?<!\s)\s+FORMAT\s++(\w++)\s*+$", re.IGNORECASE)


def limits(settings: Settings) -> dict:
    c = settings.clickhouse
    return {"max_execution_time": c.query_max_seconds, "max_memory_usage": c.query_max_memory_bytes,
            "max_result_rows": c.query_max_result_rows, "result_overflow_mode": "throw",
            "max_threads": c.query_max_threads}


@lru_cache(maxsize=512)   # sqlparse takes milliseconds on a report's text, which comes again and again
def _statement(sql: str) -> str:
    """The one statement of a request (chDB would run several, one after the other)."""
    statements = [part.strip().rstrip(";").strip() for part in sqlparse.split(sql)]
    statements = [part for part in statements if part]
    if not statements:
        raise RefusedQuery("empty statement")
    if len(statements) > 1:
        raise RefusedQuery(f"one statement per request; this request holds {len(statements)}")
    return statements[0]


class _Sessions:
    """Read-only sessions ready for use, per ClickHouse location and limits. Opening one costs about 8 ms on
    chDB (a connection handle, its probes, the SETs), more than a customer's timeline query itself. A session
    is set read-only before anyone's statement runs in it, and readonly=1 refuses SET, USE and every write, so
    nothing a statement does outlives it: handing the session to the next statement is safe."""

    def __init__(self):
        self._idle: dict[tuple, queue.SimpleQueue] = {}
        self._lock = threading.Lock()

    def _key(self, settings: Settings) -> tuple:
        return (_dsn(settings), settings.clickhouse.database, tuple(sorted(limits(settings).items())))

    def take(self, settings: Settings):
        with self._lock:
            idle = self._idle.setdefault(self._key(settings), queue.SimpleQueue())
        try:
            return idle.get_nowait()
        except queue.Empty:
            return _open_session(settings)

    def give_back(self, settings: Settings, client) -> None:
        self._idle[self._key(settings)].put(client)


def _open_session(settings: Settings):
    client = clickhouse_connect.get_client(dsn=_dsn(settings), database=settings.clickhouse.database)
    if settings.embedded_clickhouse:
        # chDB applies query settings as session SETs: the limits, then readonly last, on this session only.
        for statement in _read_only_sets(limits(settings)):
            client.command(statement)
    return client


_sessions = _Sessions()


class _Verdicts:
    """Statements already found to be allowed reads (the console and reports send the same few again and
    again): their EXPLAIN AST, 2-3 ms, is not asked twice. Bounded: the oldest are forgotten first."""

    def __init__(self, size: int = 512):
        self._seen: dict[str, None] = {}
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, statement: str) -> bool:
        return statement in self._seen

    def remember(self, statement: str) -> None:
        with self._lock:
            self._seen[statement] = None
            while len(self._seen) > self._size:
                del self._seen[next(iter(self._seen))]


_allowed = _Verdicts()


def run_read_only(settings: Settings, sql: str, parameters: dict | None = None) -> tuple[list[str], list[list]]:
    """(columns, rows) of one analyst statement, in a read-only session of analysts' (never the sink's).
    Raises RefusedQuery for a statement that is not allowed, and ClickHouse's error for one that fails (a
    limit, a typo)."""
    statement = _statement(sql)
    query_settings = None if settings.embedded_clickhouse else {**limits(settings), "readonly": 1}
    client = _sessions.take(settings)
    healthy = False
    try:
        if statement not in _allowed:   # the verdict depends on the text alone, not on parameter values
            ast = client.query(f"EXPLAIN AST {statement}", parameters=parameters or None, settings=query_settings)
            check_ast([row[0] for row in ast.result_rows])
            _allowed.remember(statement)
        try:
            result = client.query(statement, parameters=parameters or None, settings=query_settings)
        except DatabaseError:
            healthy = True   # ClickHouse answered (a limit, a typo): the session is as it was
            raise
        columns = list(result.column_names)
        if not columns:  # chDB answers an empty result without its header: ask for the columns themselves
            described = client.query(f"DESCRIBE TABLE ({statement})", parameters=parameters or None,
                                     settings=query_settings)
            columns = [row[0] for row in described.result_rows]
        healthy = True
        return columns, [list(row) for row in result.result_rows]
    except RefusedQuery:
        healthy = True
        raise
    finally:
        if healthy:
            _sessions.give_back(settings, client)
        else:
            client.close()


def _read_only_sets(values: dict) -> list[str]:
    """The SETs that make a chDB session an analyst's: the limits (and safe settings), then readonly last, so
    that nothing run afterwards in the session can change them."""
    return ["SET " + ", ".join(f"{name} = {_literal(value)}" for name, value in values.items()), "SET readonly = 1"]


def _literal(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def _with_limits(settings: Settings, client_settings: dict[str, str]) -> dict:
    """The client's settings with the hub's limits over them: a client may lower a limit, never raise it."""
    merged = dict(client_settings)
    for name, limit in limits(settings).items():
        asked = client_settings.get(name)
        merged[name] = min(limit, int(asked)) if isinstance(limit, int) and asked is not None and asked.isdigit() and int(asked) > 0 \
            else limit
    return merged


def split_format(statement: str) -> tuple[str, str | None]:
    """(the statement without a trailing FORMAT clause, that format or None)."""
    match = TRAILING_FORMAT.search(statement)
    return (statement[:match.start()], match.group(1)) if match else (statement, None)


def run_read_only_raw(settings: Settings, sql: str, parameters: dict[str, str], default_format: str,
                      database: str | None = None, client_settings: dict[str, str] | None = None) -> tuple[bytes, str]:
    """(result bytes, their format) of one analyst statement on embedded chDB, as ClickHouse's HTTP interface
    answers it: the statement's own FORMAT clause, else default_format; parameters in ClickHouse's text form
    (param_x of the URL), passed as they are. Same checks and limits as run_read_only.

    On chDB's own connection rather than clickhouse-connect's: clickhouse-connect would quote parameter text
    again as Python strings ("['a']" arriving as a String, not an Array); a connection handle keeps its SETs
    to itself, as a clickhouse-connect chDB client does."""
    import chdb

    statement, fmt = split_format(_statement(sql))
    fmt = fmt or default_format
    connection = chdb.connect(str(Path(settings.clickhouse.embedded_path).resolve()))
    try:
        connection.query(f"USE `{database or settings.clickhouse.database}`")
        for set_statement in _read_only_sets(_with_limits(settings, client_settings or {})):
            connection.query(set_statement)
        if statement not in _allowed:
            check_ast(connection.query(f"EXPLAIN AST {statement}", "TSVRaw", params=parameters).bytes().decode().splitlines())
            _allowed.remember(statement)
        return connection.query(statement, fmt, params=parameters).bytes(), fmt
    finally:
        connection.close()
