"""Decode what Omnihub publishes, from any Kafka client, with fastavro alone.

Copy this file and the folder schemas/avro (with its history/) into a downstream project, or import it
from the omnihub package. It depends on nothing else of Omnihub.

Every value on Omnihub's topics is Avro in one of two standard frames:

- Avro single-object encoding (the default, no schema registry): the bytes C3 01, then the 8-byte
  little-endian CRC-64-AVRO fingerprint of the writer's schema, then the Avro binary body. The fingerprint
  names the schema, so the decoder needs no registry: it indexes every .avsc under a folder by fingerprint
  (the current schemas and every released version kept in history/).
- Confluent framing (when Omnihub runs with schemas.registry_url): the byte 00, a 4-byte big-endian schema
  id, then the body. The decoder fetches the writer schema by id from the registry (GET /schemas/ids/<id>)
  once and keeps it.

Usage:

    decoder = OmnihubDecoder()                      # the schemas shipped with omnihub
    decoder = OmnihubDecoder("path/to/avro")        # a copy of schemas/avro
    decoder = OmnihubDecoder(registry_url="http://registry:8081")
    name, record = decoder.decode(message.value)    # ("timeline_event", {...}); None value: a tombstone

Records come out as written: timestamps as timezone-aware datetimes, money as integer minor units (cents)
next to their currency, optional fields as None. Decoding with an older writer schema fills the fields added
since with their defaults only if you pass reader schemas (reader_by_name); by default a record has the
fields its writer wrote.
"""
from __future__ import annotations

import io
import json
import struct
import urllib.request
from pathlib import Path

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

SINGLE_OBJECT = b"\xc3\x01"
CONFLUENT = b"\x00"


class UndecodableRecord(ValueError):
    """Bytes in neither frame, a schema this decoder has not got, or a body that does not match it."""


def _fingerprint(parsed: dict) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def _default_folder() -> Path:
    return Path(__file__).resolve().parent / "avro"


class OmnihubDecoder:
    def __init__(self, schema_folder: str | Path | None = None, registry_url: str | None = None, timeout: float = 10.0):
        self.registry_url = registry_url.rstrip("/") if registry_url else None
        self.timeout = timeout
        self._by_fingerprint: dict[bytes, tuple[str, dict]] = {}
        self._by_id: dict[int, tuple[str, dict]] = {}
        folder = Path(schema_folder) if schema_folder else _default_folder()
        for path in sorted(folder.rglob("*.avsc")):
            # schemas/avro/<name>.avsc, and schemas/avro/history/<name>/vN.avsc for released versions
            name = path.stem if path.parent == folder else path.parent.name
            parsed = parse_schema(json.loads(path.read_text()))
            self._by_fingerprint[_fingerprint(parsed)] = (name, parsed)
        if not self._by_fingerprint:
            raise FileNotFoundError(f"no .avsc schema under {folder}")

    def _writer(self, data: bytes) -> tuple[str, dict, int]:
        if data[:2] == SINGLE_OBJECT and len(data) >= 10:
            found = self._by_fingerprint.get(data[2:10])
            if found is None:
                raise UndecodableRecord(f"schema fingerprint {data[2:10].hex()} is not in this decoder's schemas: "
                                        "copy the newer schemas/avro folder")
            return found[0], found[1], 10
        if data[:1] == CONFLUENT and len(data) >= 5:
            schema_id = struct.unpack(">I", data[1:5])[0]
            if schema_id not in self._by_id:
                self._by_id[schema_id] = self._from_registry(schema_id)
            name, parsed = self._by_id[schema_id]
            return name, parsed, 5
        raise UndecodableRecord(f"neither an Avro single-object nor a Confluent frame (first bytes {data[:4].hex()})")

    def _from_registry(self, schema_id: int) -> tuple[str, dict]:
        if not self.registry_url:
            raise UndecodableRecord(f"Confluent-framed record (schema id {schema_id}) but no registry_url given")
        with urllib.request.urlopen(f"{self.registry_url}/schemas/ids/{schema_id}", timeout=self.timeout) as answer:
            schema = json.loads(json.loads(answer.read())["schema"])
        parsed = parse_schema(schema)
        known = self._by_fingerprint.get(_fingerprint(parsed))
        return (known[0] if known else schema.get("name", f"schema-{schema_id}")), parsed

    def decode(self, data: bytes | None) -> tuple[str, dict | None]:
        """(schema name, record); (\"tombstone\", None) for a deleted key on a compacted topic."""
        if data is None:
            return "tombstone", None
        name, writer, start = self._writer(data)
        try:
            return name, schemaless_reader(io.BytesIO(data[start:]), writer, None)
        except Exception as error:
            raise UndecodableRecord(f"{name}: the body does not match its schema: {error}") from error
