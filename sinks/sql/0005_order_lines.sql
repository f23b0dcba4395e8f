-- One row per order or receipt line, for purchasing (demand per SKU) and finance (cost of goods).
-- Filled by a materialized view from every timeline_events insert; a replayed event yields the
-- same (sku, event_time, event_id, line_number) key, which ReplacingMergeTree keeps once (read with FINAL).
CREATE TABLE IF NOT EXISTS order_lines
(
    event_id          String,
    line_number       UInt16,
    event_time        DateTime64(3, 'UTC'),
    channel           LowCardinality(String),
    customer_id       String,          -- as published; resolve through identity_map for the current id
    source_id         String,
    sku               String,
    quantity          Int32,
    unit_price_minor  Int64,
    unit_cost_minor   Nullable(Int64),
    campaign          Nullable(String),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (sku, event_time, event_id, line_number);

CREATE MATERIALIZED VIEW IF NOT EXISTS order_lines_from_timeline TO order_lines AS
SELECT
    event_id,
    toUInt16(line_index) AS line_number,
    event_time,
    channel,
    customer_id,
    source_id,
    line.1 AS sku,
    line.2 AS quantity,
    line.3 AS unit_price_minor,
    line.4 AS unit_cost_minor,
    nullIf(JSONExtractString(payload_json, 'campaign'), '') AS campaign
FROM timeline_events
ARRAY JOIN
    JSONExtract(payload_json, 'lines',
                'Array(Tuple(sku String, quantity Int32, unit_price_minor Int64, unit_cost_minor Nullable(Int64)))') AS line,
    arrayEnumerate(JSONExtractArrayRaw(payload_json, 'lines')) AS line_index
WHERE event_type IN ('order', 'receipt');
