"""Which ClickHouse errors mean "these rows are refused" rather than "ClickHouse is unavailable".

The sink dead-letters refused rows and retries everything else. Getting this wrong either way is
costly: an outage taken for refused rows would dead-letter good data, and refused rows taken for an
outage would stall the sink forever. So only errors that name the data count as refusals:
- clickhouse-connect's DataError: a value the column cannot hold, found while serialising the
  insert on our side (a negative number in a UInt column, a None in a non-Nullable one);
- ClickHouse errors whose code names bad data (a violated constraint, an unparsable value...).
Anything else (connection refused, timeouts, memory limits, too many parts, an unknown table) is
an outage or a deployment fault, and waits for a retry.
"""
from __future__ import annotations

import re

from clickhouse_connect.driver.exceptions import DataError

# ClickHouse error names (src/Common/ErrorCodes.cpp) that describe the inserted data itself.
ROW_ERROR_NAMES = frozenset({
    "CANNOT_PARSE_TEXT", "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE",
    "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER", "CANNOT_PARSE_UUID", "CANNOT_PARSE_BOOL", "CANNOT_CONVERT_TYPE",
    "TYPE_MISMATCH", "INCORRECT_DATA", "TOO_LARGE_STRING_SIZE", "ARGUMENT_OUT_OF_BOUND",
    "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN", "VIOLATED_CONSTRAINT",
    "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO", "DECIMAL_OVERFLOW",
})
ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")


def error_name(error: BaseException) -> str | None:
    """The ClickHouse error name in a message such as 'Code: 469. DB::Exception: ... (VIOLATED_CONSTRAINT)'."""
    names = ERROR_NAME.findall(str(error))
    return names[-1] if names else None


def is_row_rejection(error: BaseException) -> bool:
    if isinstance(error, DataError):
        return True
    return error_name(error) in ROW_ERROR_NAMES
