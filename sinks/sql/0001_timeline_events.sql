-- Every accepted channel event, one row per event_id. The sink may write an event twice (at-least-once
-- delivery); ReplacingMergeTree keeps one row per sorting key, and the key ends with event_id, so
-- reads with FINAL (or argMax) see each event once. Sorted by customer for per-customer timelines.
CREATE TABLE IF NOT EXISTS timeline_events
(
    event_id      String,
    event_time    DateTime64(3, 'UTC'),
    channel       LowCardinality(String),
    event_type    LowCardinality(String),
    customer_id   String,
    source_id     String,
    amount_minor  Nullable(Int64),
    currency      LowCardinality(Nullable(String)),
    payload_json  String,
    kafka_topic   LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset  UInt64,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (customer_id, event_time, event_id);
