"""File sources read incrementally from a byte offset, and the positions they resume from.

Each record carries the byte offset just after it, so a run can commit "everything before here is
on Kafka" and a restart continues from there. A source never raises for bad data: a line that is
not JSON, or a CSV row with the wrong number of columns, comes out as a record with an error.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import ijson

HEAD_BYTES = 4096  # how much of a file's start identifies it across restarts


@dataclass
class SourceRecord:
    position: str              # where it came from, for people: "line 12", "lines 5-7", "request r1 item 3"
    raw: bytes                 # as read, for dead letters
    value: Any = None          # the parsed record, when it parsed
    error: str | None = None   # why it did not parse
    end_offset: int = 0        # byte offset just after this record
    end_line: int = 0          # last line number this record used


def parse_json(raw: bytes) -> tuple[Any, str | None]:
    """(value, None) or (None, why not): never raises, whatever the bytes."""
    try:
        return json.loads(raw), None
    except UnicodeDecodeError as error:
        return None, f"not valid UTF-8: byte 0x{raw[error.start]:02x} at position {error.start}"
    except ValueError as error:
        return None, f"not valid JSON: {getattr(error, 'msg', error)} (column {getattr(error, 'colno', '?')})"
    except RecursionError:
        return None, "not readable JSON: nested deeper than this reader follows"


def read_jsonl(path: Path, start_offset: int = 0, start_line: int = 0, follow: bool = False) -> Iterator[SourceRecord | None]:
    """One record per line. With follow, yields None at the end of the file (the caller waits and
    iterates again) instead of ending; a last line without its newline is read only when not
    following, since a writer may be mid-line."""
    with path.open("rb") as file:
        file.seek(start_offset)
        offset, line_number = start_offset, start_line
        while True:
            line = file.readline()
            if not line or (follow and not line.endswith(b"\n")):
                if not follow:
                    return
                file.seek(offset)
                yield None  # idle: the caller commits, waits and asks again (or stops iterating)
                continue
            offset += len(line)
            line_number += 1
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines are layout, not records
            record = SourceRecord(f"line {line_number}", raw, end_offset=offset, end_line=line_number)
            record.value, record.error = parse_json(raw)
            if record.error is None:
                if not isinstance(record.value, dict):
                    record.error = f"expected a JSON object, got {type(record.value).__name__}"
            yield record


class _CountingFile:
    """A binary file that counts the bytes the parser has taken (a JSON document's records have no
    offsets of their own; this one only marks how far the file was read, for the head digest)."""

    def __init__(self, file):
        self.file, self.taken = file, 0

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.taken += len(data)
        return data


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as file:
        while chunk := file.read(4096):
            stripped = chunk.lstrip(b" \t\r\n\xef\xbb\xbf")
            if stripped:
                return stripped[:1]
    return b""


def _top_level_keys(path: Path) -> list[str]:
    with path.open("rb") as file:
        try:
            return [value for prefix, event, value in ijson.parse(file) if prefix == "" and event == "map_key"]
        except ijson.JSONError:
            return []


def read_json_document(path: Path, records_at: str | None = None, start_item: int = 0) -> Iterator[SourceRecord]:
    """The records of one JSON document: the items of its top-level array, or of the array at records_at
    (a dotted path such as data.tickets). Streamed (ijson): a large export is never loaded whole. Numbers
    with a fraction come out as Decimal, so amounts stay exact. A record's position is its item number;
    a resumed run skips the first start_item items. A syntax error ends the document: everything from
    there on is one rejected record, since no later item can be trusted to start where it seems to."""
    if records_at is None and _first_byte(path) == b"{":
        keys = _top_level_keys(path)
        arrays = ", ".join(keys) or "none readable"
        yield SourceRecord("document", b"", error=f"the document is an object, not an array of records: set "
                                                   f"source.records_at to the key holding them (its keys: {arrays})")
        return
    number = 0
    with path.open("rb") as file:
        counting = _CountingFile(file)
        try:
            for value in ijson.items(counting, f"{records_at}.item" if records_at else "item", use_float=False):
                number += 1
                if number <= start_item:
                    continue
                raw = json.dumps(value, default=str, ensure_ascii=False).encode()
                record = SourceRecord(f"item {number}", raw, value, end_offset=counting.taken, end_line=number)
                if not isinstance(value, dict):
                    record.value, record.error = None, f"expected a JSON object, got {type(value).__name__}"
                yield record
        except ijson.JSONError as error:
            reason = str(error).splitlines()[0]
            yield SourceRecord(f"after item {number}", b"", error=f"not valid JSON from here to the end of the document "
                                                                 f"({reason}); the items before it were read",
                               end_offset=counting.taken, end_line=number)
            return
    if number == 0 and records_at is not None and not _has_array_at(path, records_at):
        yield SourceRecord("document", b"", error=f"no array at records_at {records_at!r} "
                                                   f"(top-level keys: {', '.join(_top_level_keys(path)) or 'none'})")


def _has_array_at(path: Path, records_at: str) -> bool:
    with path.open("rb") as file:
        try:
            return any(prefix == records_at and event == "start_array" for prefix, event, _ in ijson.parse(file))
        except ijson.JSONError:
            return False


def file_format(path: Path, configured: str | None = None, records_at: str | None = None) -> str:
    """csv, jsonl or json (one document): as configured, else from the file. A .json file is a document
    when it starts with '[' or its first line is not a whole JSON value (a pretty-printed object), JSON Lines
    otherwise; .csv is CSV; anything else JSON Lines."""
    if configured:
        return configured
    if records_at:
        return "json"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix != ".json":
        return "jsonl"
    if _first_byte(path) == b"[":
        return "json"
    with path.open("rb") as file:
        return "jsonl" if parse_json(file.readline().strip())[1] is None else "json"


class _OffsetLines:
    """Decoded lines of a binary file that remember the byte offset after the last line handed out,
    so a csv.reader on top (which pulls exactly the lines of one row) yields exact row offsets."""

    def __init__(self, file, encoding: str, offset: int, line_number: int):
        self.file, self.encoding, self.offset, self.line_number = file, encoding, offset, line_number
        self.taken: list[bytes] = []  # raw lines handed out since the last take_raw()

    def take_raw(self) -> bytes:
        raw = b"".join(self.taken).rstrip(b"\r\n")
        self.taken.clear()
        return raw

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.file.readline()
        if not line:
            raise StopIteration
        self.offset += len(line)
        self.line_number += 1
        self.taken.append(line)
        # Undecodable bytes survive as lone surrogates: the row holding them is rejected with its line,
        # instead of the whole file failing at it.
        return line.decode(self.encoding, "surrogateescape")


def _undecodable(cell: str) -> bool:
    return any(0xDC80 <= ord(c) <= 0xDCFF for c in cell)


def read_csv(path: Path, start_offset: int = 0, start_line: int = 0, encoding: str = "utf-8",
             delimiter: str = ",", group_rows_by: str | None = None) -> Iterator[SourceRecord]:
    """One record per row (dict by header), or per run of consecutive rows sharing group_rows_by:
    then the record is the first row's columns plus 'rows', the list of all its rows."""
    with path.open("rb") as file:
        header_lines = _OffsetLines(file, "utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding, 0, 0)
        header = next(csv.reader(header_lines, delimiter=delimiter), None)
        if header is None:
            return
        header = [name.strip() for name in header]
        if start_offset < header_lines.offset:
            start_offset, start_line = header_lines.offset, header_lines.line_number
        file.seek(start_offset)
        lines = _OffsetLines(file, encoding, start_offset, start_line)
        reader = csv.reader(lines, delimiter=delimiter)
        group: list[tuple[dict, SourceRecord]] = []

        def flush() -> Iterator[SourceRecord]:
            if not group:
                return
            first, last = group[0][1], group[-1][1]
            value = dict(group[0][0])
            value["rows"] = [row for row, _ in group]
            start = first.position.split(" ", 1)[1].split("-")[0]
            position = first.position if len(group) == 1 else f"lines {start}-{last.end_line}"
            yield SourceRecord(position, b"\n".join(r.raw for _, r in group), value,
                               end_offset=last.end_offset, end_line=last.end_line)
            group.clear()

        while True:
            row_start_line = lines.line_number
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:  # e.g. a NUL byte or an over-long field
                yield from flush()
                yield SourceRecord(f"line {row_start_line + 1}", lines.take_raw(), error=f"not valid CSV: {error}",
                                   end_offset=lines.offset, end_line=lines.line_number)
                continue
            raw = lines.take_raw()
            position = f"line {row_start_line + 1}" if lines.line_number == row_start_line + 1 else \
                f"lines {row_start_line + 1}-{lines.line_number}"
            record = SourceRecord(position, raw, end_offset=lines.offset, end_line=lines.line_number)
            if not any(cell.strip() for cell in row):
                continue  # blank line
            bad = next((cell for cell in row if _undecodable(cell)), None)
            if bad is not None:
                byte = next(ord(c) - 0xDC00 for c in bad if 0xDC80 <= ord(c) <= 0xDCFF)
                record.error = f"not valid {encoding}: byte 0x{byte:02x}"
                yield from flush()
                yield record
                continue
            if len(row) != len(header):
                record.error = f"expected {len(header)} columns ({', '.join(header)}), got {len(row)}"
                yield from flush()
                yield record
                continue
            value = dict(zip(header, row))
            if group_rows_by is None:
                record.value = value
                yield record
                continue
            if group and group[0][0].get(group_rows_by) != value.get(group_rows_by):
                # the group ended just before this row: its offset is the commit point
                yield from flush()
            group.append((value, record))
        yield from flush()


# --- positions ---------------------------------------------------------------------------------

@dataclass
class Position:
    offset: int = 0
    line: int = 0
    head_sha256: str = ""
    clean: bool = True
    broker: str = ""  # infra.kafka.broker_id of the broker these records went to ("" before it was recorded)
    # per topic, per partition: the offset from which records of an unfinished batch may sit on Kafka
    produced_from: dict[str, dict[str, int]] = field(default_factory=dict)


def head_digest(path: Path, length: int) -> str:
    with path.open("rb") as file:
        return hashlib.sha256(file.read(min(length, HEAD_BYTES))).hexdigest()


class PositionStore:
    """One small JSON file per connector under data_dir/connectors/, replaced atomically."""

    def __init__(self, directory: Path, connector: str):
        self.path = Path(directory) / f"{connector}.positions.json"

    def _all(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def load(self, source: Path) -> Position | None:
        """The committed position in this file, or None if the file is new or was replaced
        (its first bytes differ from what was read before)."""
        entry = self._all().get(str(source))
        if entry is None:
            return None
        position = Position(**entry)
        try:
            if source.stat().st_size < position.offset or head_digest(source, position.offset) != position.head_sha256:
                return None
        except FileNotFoundError:
            return None
        return position

    def save(self, source: Path, position: Position) -> None:
        entries = self._all()
        entries[str(source)] = position.__dict__
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as out:
            json.dump(entries, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)

    def forget(self, source: Path) -> None:
        entries = self._all()
        if entries.pop(str(source), None) is not None:
            self.path.write_text(json.dumps(entries, indent=1))
