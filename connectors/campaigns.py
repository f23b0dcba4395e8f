"""Campaign announcements from marketing (a JSON list, as `omnihub generate` writes campaigns.json),
validated and published on the campaigns topic, from which the sink fills the campaigns table."""
from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.models import to_minor_units


class CampaignAnnouncement(BaseModel):
    model_config = ConfigDict(extra="ignore")
    campaign_id: str = Field(min_length=1)
    name: str
    starts_at: datetime
    ends_at: datetime
    audience_segment: str = "all"
    channels: list[str] = []
    discount_code: str | None = None
    media_cost: Decimal = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    expected_extra_visitors: int = Field(default=0, ge=0)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _zoned(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a time zone offset")
        return value

    @field_validator("media_cost")
    @classmethod
    def _cents(cls, value: Decimal) -> Decimal:
        to_minor_units(value, "media_cost")  # more than 2 decimals is an error, not a rounding
        return value

    @model_validator(mode="after")
    def _window(self) -> "CampaignAnnouncement":
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self

    def to_avro(self) -> dict:
        record = self.model_dump(exclude={"media_cost"})
        record["media_cost_minor"] = to_minor_units(self.media_cost, "media_cost")
        return record


def read_announcements(path: Path) -> list[CampaignAnnouncement]:
    """All campaigns of a file, or ValueError naming each bad one (nothing is published then)."""
    try:
        items = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read a JSON list of campaigns: {error}") from None
    if not isinstance(items, list):
        items = [items]
    campaigns, problems = [], []
    for index, item in enumerate(items):
        try:
            campaigns.append(CampaignAnnouncement.model_validate(item))
        except ValidationError as error:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'campaign'}: {e['msg']}" for e in error.errors())
            problems.append(f"campaign {index} ({item.get('campaign_id', '?') if isinstance(item, dict) else '?'}): {reasons}")
    if problems:
        raise ValueError(f"{path}: " + " | ".join(problems))
    return campaigns
