"""Campaign announcements: validated before anything is published."""
from __future__ import annotations

import json

import pytest

from connectors.campaigns import read_announcements

GOOD = {"campaign_id": "tv-best24", "name": "TV", "starts_at": "2026-11-20T00:00:00+01:00",
        "ends_at": "2026-11-21T00:00:00+01:00", "media_cost": "185000.00", "currency": "EUR", "discount_code": "BEST24"}


def test_a_campaign_file_becomes_records_in_minor_units(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([GOOD]))
    [campaign] = read_announcements(path)
    record = campaign.to_avro()
    assert record["media_cost_minor"] == 18_500_000 and record["discount_code"] == "BEST24"
    assert record["starts_at"].utcoffset().total_seconds() == 3600


@pytest.mark.parametrize("change, reason", [
    ({"ends_at": "2026-11-19T00:00:00+01:00"}, "ends_at must be after starts_at"),
    ({"starts_at": "2026-11-20T00:00:00"}, "needs a time zone offset"),
    ({"media_cost": "12.345"}, "more than 2 decimals"),
    ({"currency": "euro"}, "currency"),
])
def test_one_bad_campaign_stops_the_whole_file_with_its_reason(tmp_path, change, reason):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([GOOD, GOOD | {"campaign_id": "bad"} | change]))
    with pytest.raises(ValueError, match=reason) as error:
        read_announcements(path)
    assert "campaign 1 (bad)" in str(error.value)
