"""File sources: exact byte offsets for resuming, CSV row grouping, partial lines, replaced files."""
from __future__ import annotations

from connectors.sources import Position, PositionStore, read_csv, read_jsonl

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
