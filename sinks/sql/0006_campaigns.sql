-- Campaigns marketing announces (window, audience, channels, media cost, expected extra visitors),
-- loaded with `omnihub campaigns load FILE`; the latest load of a campaign id wins.
CREATE TABLE IF NOT EXISTS campaigns
(
    campaign_id              String,
    name                     String,
    starts_at                DateTime64(3, 'UTC'),
    ends_at                  DateTime64(3, 'UTC'),
    audience_segment         LowCardinality(String),
    channels                 Array(String),
    discount_code            Nullable(String),
    media_cost_minor         Int64,
    currency                 LowCardinality(String),
    expected_extra_visitors  UInt64,
    loaded_at                DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY campaign_id;
