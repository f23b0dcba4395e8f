"""Every schema change must stay backward compatible: the current schema reads whatever any released
version wrote. Released versions live in schemas/avro/history/<name>/vN.avsc."""
import copy
import io
from importlib import resources

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from schemas.serde import released_schema_jsons, schema_fingerprint, schema_json

SCHEMAS = sorted(p.name[:-5] for p in (resources.files("schemas") / "avro").iterdir() if p.name.endswith(".avsc"))


def incompatibilities(reader_json: dict, writer_jsons: list[dict], samples: int = 50) -> list[str]:
    reader = parse_schema(copy.deepcopy(reader_json))
    problems = []
    for version, writer_json in enumerate(writer_jsons, start=1):
        writer = parse_schema(copy.deepcopy(writer_json))
        for record in generate_many(writer, samples):
            buffer = io.BytesIO()
            schemaless_writer(buffer, writer, record)
            buffer.seek(0)
            try:
                schemaless_reader(buffer, writer, reader)
            except Exception as error:
                problems.append(f"v{version}: {error}")
                break
    return problems


def test_every_schema_has_released_history():
    assert set(SCHEMAS) >= {"channel_event", "timeline_event", "dead_letter"}
    for name in SCHEMAS:
        assert released_schema_jsons(name), f"schemas/avro/history/{name}/ has no released version"


@pytest.mark.parametrize("name", SCHEMAS)
def test_current_schema_is_a_released_version(name):
    released = {schema_fingerprint(s) for s in released_schema_jsons(name)}
    assert schema_fingerprint(schema_json(name)) in released, (
        f"{name}.avsc changed: copy it to schemas/avro/history/{name}/v<next>.avsc once it is compatible")


@pytest.mark.parametrize("name", SCHEMAS)
def test_current_schema_reads_every_released_version(name):
    assert incompatibilities(schema_json(name), released_schema_jsons(name)) == []


def test_the_check_catches_a_field_added_without_default():
    current = schema_json("timeline_event")
    changed = copy.deepcopy(current)
    changed["fields"].append({"name": "store_id", "type": "string"})
    assert incompatibilities(changed, [current])
    changed["fields"][-1]["default"] = ""
    assert incompatibilities(changed, [current]) == []
