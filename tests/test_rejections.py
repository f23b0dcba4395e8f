"""Which ClickHouse errors the sink dead-letters (refused rows) and which it retries (outages)."""
from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from infra.clickhouse import open_client
from sinks.rejections import ROW_ERROR_NAMES, error_name, is_row_rejection


def test_every_row_error_name_is_one_clickhouse_knows(settings):
    client = open_client(settings)
    known = {row[0] for row in client.query("SELECT name FROM system.errors",
                                            settings={"system_events_show_zero_values": 1}).result_rows}
    assert len(known) > 100 and ROW_ERROR_NAMES <= known


@pytest.mark.parametrize("error, refused", [
    (DataError("Invalid None value in non-Nullable column, column name: `channel`"), True),
    (DatabaseError("Code: 469. DB::Exception: Constraint `sane` for table t is violated at row 1. (VIOLATED_CONSTRAINT)"), True),
    (DatabaseError("Code: 6. DB::Exception: Cannot parse string 'x' as Int64: syntax error. (CANNOT_PARSE_TEXT)"), True),
    (OperationalError("Error HTTPConnectionPool(host='localhost', port=8123): Max retries exceeded"), False),
    (ConnectionError("injected: ClickHouse unavailable"), False),
    (DatabaseError("Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)"), False),
    (DatabaseError("Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)"), False),
    (DatabaseError("Code: 60. DB::Exception: Table db.t does not exist. (UNKNOWN_TABLE)"), False),
])
def test_refused_rows_are_told_apart_from_outages(error, refused):
    assert is_row_rejection(error) is refused


def test_the_error_name_is_the_last_one_in_the_message():
    assert error_name(DatabaseError("Code: 469. ... (value (x)) ... (VIOLATED_CONSTRAINT) (version 26.9.1)")) == "VIOLATED_CONSTRAINT"
    assert error_name(ValueError("no name here")) is None
