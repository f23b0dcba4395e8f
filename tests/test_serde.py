import json
import struct
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from schemas.serde import DecodeError, codec, schema_fingerprint, schema_json

DEAD_LETTER = {"component": "connector:x", "source": "f.jsonl", "position": "line 3", "error": "bad",
               "raw": b"\x00raw", "rejected_at": datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc), "identifier_tokens": []}


def test_single_object_encoding_frame_and_round_trip():
    dead_letters = codec("dead_letter")
    data = dead_letters.encode(DEAD_LETTER)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema_fingerprint(schema_json("dead_letter"))
    assert dead_letters.decode(data) == DEAD_LETTER


def test_fingerprint_matches_avro_specification_vector():
    # The Avro spec's CRC-64-AVRO of the schema "null" is 0x63dd24e7cc258f8a, written little-endian.
    assert schema_fingerprint("null") == (0x63DD24E7CC258F8A).to_bytes(8, "little")


@pytest.mark.parametrize("data", [b"", b"{}", b"\xc3\x01" + b"\x00" * 8 + b"x"])
def test_unknown_frames_raise_decode_error(data):
    with pytest.raises(DecodeError):
        codec("dead_letter").decode(data)


def test_truncated_body_raises_decode_error():
    data = codec("dead_letter").encode(DEAD_LETTER)
    with pytest.raises(DecodeError, match="does not match"):
        codec("dead_letter").decode(data[:14])


class _Registry(BaseHTTPRequestHandler):
    """The two endpoints of the Confluent schema registry API that the codec calls."""
    schemas: dict[int, str] = {}

    def log_message(self, *args):
        pass

    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        schema = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["schema"]
        schema_id = 100 + len(self.schemas)
        self.schemas[schema_id] = schema
        self._send({"id": schema_id})

    def do_GET(self):
        self._send({"schema": self.schemas[int(self.path.rsplit("/", 1)[1])]})


def test_confluent_framing_with_a_registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        data = codec("dead_letter", url, "dead-letters-confluent").encode(DEAD_LETTER)
        assert data[:1] == b"\x00"
        schema_id = struct.unpack(">I", data[1:5])[0]
        assert json.loads(_Registry.schemas[schema_id]) == schema_json("dead_letter")
        assert codec("dead_letter", url, "dead-letters-confluent").decode(data) == DEAD_LETTER
        with pytest.raises(DecodeError, match="no schema registry"):
            codec("dead_letter").decode(data)
    finally:
        server.shutdown()


def test_event_ids_are_uuid5_of_channel_and_source_id():
    import uuid

    from schemas.models import EVENT_NAMESPACE, event_id

    for channel, source_id in [("web", "W-1"), ("store", "PAR-01:R-88001"), ("social", "facebook:fb_1 é")]:
        assert event_id(channel, source_id) == str(uuid.uuid5(EVENT_NAMESPACE, f"{channel}:{source_id}"))


def _fastavro_bytes(name: str, record: dict) -> bytes:
    import io
    from fastavro import parse_schema, schemaless_writer
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(schema_json(name)), record)
    return buffer.getvalue()


def test_the_fast_path_writes_and_reads_what_fastavro_does(tmp_path):
    """Every record the connectors and the resolver publish for a generated scenario: the codec's bytes (cavro)
    are fastavro's, byte for byte, and decoding gives fastavro's dict."""
    import io
    from fastavro import parse_schema, schemaless_reader
    from connectors.config import bundled_configs
    from connectors.runtime import Connector, sample_records
    from connectors.scenario import generate
    from infra.settings import load_settings
    from streams.resolver import Outputs, Resolver
    from streams.state_store import StateStore

    settings = load_settings(None, data_dir=tmp_path)
    manifest = generate(tmp_path / "scenario", 200, 2_000, seed=7)
    resolver = Resolver(settings, StateStore(tmp_path / "state"))
    names = {codec_.subject.removesuffix("-value"): name for name, codec_ in resolver.codecs.items()}
    out, checked = Outputs(), {}
    for config in bundled_configs():
        connector = Connector(settings, "", config)
        for record in sample_records(connector, tmp_path / "scenario" / manifest["channels"][connector.config.name]["file"])[1]:
            for _, event, reason in connector.preview([record]):
                if reason is None:
                    value = connector.codec.encode(event)
                    assert value[10:] == _fastavro_bytes("channel_event", event)
                    resolver.channel_record(connector.codec.encode(connector.sealer.seal_event(event)), connector.topic, 0, 0, out)
    resolver.finish(out)
    for topic, _, value, _ in out.sends:
        if value is None:
            continue
        name = names[topic]
        decoded = resolver.codecs[name].decode(value)
        assert decoded == schemaless_reader(io.BytesIO(value[10:]), parse_schema(schema_json(name)), None)
        assert value[10:] == _fastavro_bytes(name, decoded)
        checked[name] = checked.get(name, 0) + 1
    assert {"timeline_event", "customer_profile", "identity_merge"} <= set(checked), checked


def test_a_record_that_does_not_fit_is_refused_with_fastavros_reason():
    event = {**DEAD_LETTER, "position": 3}
    with pytest.raises(TypeError, match="must be string on field position"):
        codec("dead_letter").encode(event)
