-- Which channels each customer reached support on, and which tickets: a rollup of event_details (support rows)
-- for the multichannel-contacts report, whose size grows with tickets, not with ticket updates. Neither a
-- contact channel nor a ticket id is personal; the sink still deletes a forgotten customer's rows here, as in
-- event_details. Duplicates (a replayed delivery) add nothing: the report counts distinct values.
CREATE TABLE IF NOT EXISTS support_contacts
(
    customer_id      String,          -- as published; resolve through identity_map
    contact_channel  LowCardinality(String),
    ticket_id        String
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, contact_channel, ticket_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS support_contacts_from_details TO support_contacts AS
SELECT DISTINCT customer_id, JSONExtractString(attributes_json, 'contact_channel') AS contact_channel,
       JSONExtractString(attributes_json, 'ticket_id') AS ticket_id
FROM event_details
WHERE channel = 'support';

INSERT INTO support_contacts
SELECT DISTINCT customer_id, JSONExtractString(attributes_json, 'contact_channel'), JSONExtractString(attributes_json, 'ticket_id')
FROM event_details
WHERE channel = 'support';

-- Lag per minute of ingestion and channel (each event once, at its first arrival), for the ingestion-lag
-- report: the events of the last hour of ingestion are read from here, not from the events.
CREATE TABLE IF NOT EXISTS ingest_minutes
(
    minute      DateTime('UTC'),         -- toStartOfMinute(ingested_at)
    channel     LowCardinality(String),
    events      SimpleAggregateFunction(sum, UInt64),
    lag_ms      SimpleAggregateFunction(sum, Int64)    -- sum of ingested_at - event_time, in milliseconds
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, channel);

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_minutes_from_facts TO ingest_minutes AS
SELECT toStartOfMinute(ingested_at) AS minute, channel, count() AS events,
       sum(dateDiff('millisecond', event_time, ingested_at)) AS lag_ms
FROM timeline_facts
GROUP BY minute, channel;

-- Contacts (tickets, messages) that name an order, sorted by the order they name: the tickets-with-orders
-- report reads these and looks the named orders up (a bloom filter on the facts' source ids), instead of
-- scanning every event.
CREATE TABLE IF NOT EXISTS order_mentions
(
    related_order_id  String,
    event_id          String,
    event_time        DateTime64(3, 'UTC'),
    channel           LowCardinality(String),
    source_id         String,
    customer_id       String          -- as published; resolve through identity_map
)
ENGINE = ReplacingMergeTree
ORDER BY (related_order_id, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS order_mentions_from_facts TO order_mentions AS
SELECT related_order_id, event_id, event_time, channel, source_id, customer_id
FROM timeline_facts
WHERE related_order_id != '';

ALTER TABLE timeline_facts ADD INDEX IF NOT EXISTS source source_id TYPE bloom_filter GRANULARITY 1;
ALTER TABLE timeline_facts MATERIALIZE INDEX source;

-- What timeline_facts held before: nothing else writes while migrations run, so empty, then fill once.
TRUNCATE TABLE ingest_minutes;
INSERT INTO ingest_minutes
SELECT toStartOfMinute(ingested_at), channel, count(), sum(dateDiff('millisecond', event_time, ingested_at))
FROM timeline_facts FINAL
GROUP BY toStartOfMinute(ingested_at), channel;
TRUNCATE TABLE order_mentions;
INSERT INTO order_mentions
SELECT related_order_id, event_id, event_time, channel, source_id, customer_id
FROM timeline_facts FINAL
WHERE related_order_id != '';

-- A ticket's status as a column: a customer's timeline read every event's whole payload to show it, and a
-- granule of payloads costs more than the rest of that query.
ALTER TABLE timeline_events ADD COLUMN IF NOT EXISTS status LowCardinality(String)
    MATERIALIZED JSONExtractString(payload_json, 'status');
ALTER TABLE timeline_events MATERIALIZE COLUMN status;
