"""File sources: exact byte offsets for resuming, CSV row grouping, partial lines, replaced files."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from connectors.sources import Position, PositionStore, file_format, read_csv, read_json_document, read_jsonl

CSV = ('id;receipt;sku;note\n'
       '1;R1;A;plain\n'
       '2;R1;B;"two\nlines"\n'
       '3;R2;C;x\n'
       '4;R2\n'
       '5;R3;D;y\n')


def test_csv_rows_group_by_receipt_and_offsets_resume_exactly(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text(CSV)
    records = list(read_csv(path, delimiter=";", group_rows_by="receipt"))
    assert [r.position for r in records] == ["lines 2-4", "line 5", "line 6", "line 7"]
    assert [[row["sku"] for row in r.value["rows"]] for r in records if r.value] == [["A", "B"], ["C"], ["D"]]
    assert records[0].value["rows"][1]["note"] == "two\nlines"
    assert records[2].error == "expected 4 columns (id, receipt, sku, note), got 2" and records[2].raw == b"4;R2"
    assert records[-1].end_offset == len(CSV.encode())
    # resuming after the first group reads exactly the rest
    rest = list(read_csv(path, records[0].end_offset, records[0].end_line, delimiter=";", group_rows_by="receipt"))
    assert [r.position for r in rest] == [r.position for r in records[1:]]


def test_jsonl_bad_lines_become_errors_and_following_waits_for_a_whole_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n\n[1, 2]\n{"a": \n{"a": 2')
    records = [r for r in read_jsonl(path)]
    assert [(r.position, r.value, r.error is None) for r in records] == [
        ("line 1", {"a": 1}, True), ("line 3", [1, 2], False), ("line 4", None, False), ("line 5", None, False)]
    assert "expected a JSON object" in records[1].error and "not valid JSON" in records[2].error
    following = read_jsonl(path, follow=True)
    seen = [next(following) for _ in range(4)]
    assert seen[-1] is None  # the last line has no newline yet: a writer may be mid-line
    with path.open("ab") as out:
        out.write(b', "b": 3}\n')
    record = next(following)
    assert record.value == {"a": 2, "b": 3} and record.end_offset == path.stat().st_size


def test_position_store_survives_appends_and_forgets_replaced_files(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n')
    store = PositionStore(tmp_path / "positions", "c")
    from connectors.sources import head_digest
    store.save(path, Position(offset=9, line=1, head_sha256=head_digest(path, 9), clean=True))
    with path.open("a") as out:
        out.write('{"a": 2}\n')
    assert store.load(path).offset == 9           # appended: resume
    path.write_text('{"b": 1}\n{"b": 2}\n')
    assert store.load(path) is None               # replaced (rotated): start over
    path.write_text('{"a"')
    assert store.load(path) is None               # shorter than the position: start over


def test_a_json_document_is_streamed_item_by_item_from_the_top_or_a_configured_path(tmp_path):
    top = tmp_path / "tickets.json"
    top.write_text(json.dumps([{"id": 1, "amount": 12.10}, "oops", {"id": 3}], indent=2))
    records = list(read_json_document(top))
    assert [(r.position, r.value, r.error) for r in records] == [
        ("item 1", {"id": 1, "amount": Decimal("12.10")}, None),            # amounts stay exact: no float
        ("item 2", None, "expected a JSON object, got str"), ("item 3", {"id": 3}, None)]
    assert [r.position for r in read_json_document(top, start_item=2)] == ["item 3"]   # a resumed run

    nested = tmp_path / "crm.json"
    nested.write_text(json.dumps({"meta": {"count": 2}, "data": {"tickets": [{"id": 1}, {"id": 2}]}}))
    assert [r.value["id"] for r in read_json_document(nested, "data.tickets")] == [1, 2]
    [unset] = read_json_document(nested)
    assert "set source.records_at to the key holding them (its keys: meta, data)" in unset.error
    [wrong] = read_json_document(nested, "data.ticket")
    assert "no array at records_at 'data.ticket'" in wrong.error
    assert list(read_json_document(nested, "data.tickets", start_item=2)) == []

    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1}, {"id": 2}, {"id": ')
    records = list(read_json_document(broken))
    assert [r.value for r in records[:2]] == [{"id": 1}, {"id": 2}]
    assert records[2].position == "after item 2" and "not valid JSON from here to the end" in records[2].error


@pytest.mark.parametrize("content, expected", [
    ('[{"a": 1}]', "json"), ('{\n  "data": []\n}', "json"), ('{"a": 1}\n{"a": 2}\n', "jsonl")])
def test_a_json_file_is_told_apart_from_json_lines(tmp_path, content, expected):
    path = tmp_path / "export.json"
    path.write_text(content)
    assert file_format(path) == expected
    assert file_format(path, configured="jsonl") == "jsonl" and file_format(tmp_path / "x.ndjson", records_at="d") == "json"
