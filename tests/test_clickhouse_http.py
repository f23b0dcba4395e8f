"""How the embedded ClickHouse interface reads a request (sinks/clickhouse_http.py): what is a query, a
parameter, a transport detail, a safe setting, and what is refused before anything runs."""
from __future__ import annotations

import base64
import gzip

import lz4.frame
import pytest

from sinks.clickhouse_http import ClickHouseError, authorized, decoded_body, error_from_engine, parse_request


def test_the_query_joins_url_and_body_and_parameters_are_kept_as_text():
    request = parse_request("POST", "/?query=SELECT%20*&param_ids=%5B'a'%2C'b'%5D&database=shop&query_id=q1"
                                    "&wait_end_of_query=1&session_id=s&output_format_json_quote_64bit_integers=0",
                            b"FROM t WHERE id IN {ids:Array(String)}")
    assert request.sql == "SELECT *\nFROM t WHERE id IN {ids:Array(String)}"
    assert request.parameters == {"ids": "['a','b']"} and request.database == "shop" and request.query_id == "q1"
    assert request.settings == {"output_format_json_quote_64bit_integers": "0"}
    assert request.default_format == "TabSeparated"
    assert parse_request("GET", "/?query=SELECT%201", b"ignored for GET").sql == "SELECT 1"


@pytest.mark.parametrize("path, body, why", [
    ("/?query=INSERT%20INTO%20t%20FORMAT%20Native", b"\x01\x02binary", "INSERT is not answered"),
    ("/", b"insert into t values (1)", "INSERT is not answered"),
    ("/?readonly=0&query=SELECT%201", b"", "readonly cannot be lowered"),
    ("/?allow_ddl=1&query=SELECT%201", b"", "setting allow_ddl is not accepted"),
    ("/", b"   ", "Empty query"),
])
def test_writes_and_unsafe_settings_are_refused_as_clickhouse_refuses_them(path, body, why):
    with pytest.raises(ClickHouseError, match=why) as refused:
        parse_request("POST", path, body)
    assert refused.value.code in (164, 62) and str(refused.value).startswith(f"Code: {refused.value.code}. DB::Exception:")


def test_the_token_is_accepted_as_bearer_or_as_a_clickhouse_password():
    basic = "Basic " + base64.b64encode(b"analyst:s3cret").decode()
    assert authorized("s3cret", {"Authorization": basic}, "/")
    assert authorized("s3cret", {"Authorization": "Bearer s3cret"}, "/")
    assert authorized("s3cret", {"X-ClickHouse-Key": "s3cret"}, "/")
    assert authorized("s3cret", {}, "/?user=a&password=s3cret")
    assert not authorized("s3cret", {"Authorization": "Basic " + base64.b64encode(b"analyst:guess").decode()}, "/")
    assert not authorized("s3cret", {}, "/")
    assert authorized(None, {}, "/")


def test_compressed_bodies_are_read_and_engine_errors_keep_their_code():
    assert decoded_body(gzip.compress(b"SELECT 1"), "gzip") == b"SELECT 1"
    assert decoded_body(lz4.frame.compress(b"SELECT 1"), "lz4") == b"SELECT 1"
    with pytest.raises(ClickHouseError, match="not read here"):
        decoded_body(b"x", "br")
    error = error_from_engine(RuntimeError("Code: 60. DB::Exception: Unknown table expression identifier 'nope'. (UNKNOWN_TABLE)"))
    assert error.code == 60 and error.status == 400 and "(UNKNOWN_TABLE)" in str(error)
