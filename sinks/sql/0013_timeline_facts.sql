-- What the department reports count and sum, kept so that a report reads little at 10M events and more.
--
-- timeline_facts: a narrow copy of each event, once. A materialized view fills it from every timeline_events
-- insert, leaving out the events it already holds (a replayed delivery; the check is a primary-key read of
-- the block's own hours) and repeated ones within the block. Sorted by the event's hour: a campaign's window
-- reads only its hours, and FINAL (kept, as the reports' guarantee) merges only the hours new parts share.
-- Its order and receipt lines ride along (lines_json) for the SKU rollup.
--
-- Rollups fed from the facts' inserts, so from each event once, summed by ClickHouse's merges:
-- timeline_minutes (per minute, channel, event type and campaign), customer_activity (per published
-- customer id, channel, event type and campaign), sku_minutes (per minute, SKU, channel and campaign).
-- Reports read these instead of the events: their size grows with minutes, customers and SKUs, not events.
CREATE TABLE IF NOT EXISTS timeline_facts
(
    event_id             String,
    event_time           DateTime64(3, 'UTC'),
    channel              LowCardinality(String),
    event_type           LowCardinality(String),
    customer_id          String,          -- as published; resolve through identity_map (view facts_current)
    source_id            String,
    amount_minor         Nullable(Int64),
    campaign             LowCardinality(String),
    shipping_cost_minor  Int64,
    related_order_id     String,
    lines_json           String,          -- an order's or receipt's lines, as in its payload; '' otherwise
    ingested_at          DateTime64(3, 'UTC'),
    INDEX ingested ingested_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (toStartOfHour(event_time), event_id);

CREATE TABLE IF NOT EXISTS timeline_minutes
(
    minute               DateTime('UTC'),        -- toStartOfMinute(event_time), as reports printed it before
    channel              LowCardinality(String),
    event_type           LowCardinality(String),
    campaign             LowCardinality(String),
    events               SimpleAggregateFunction(sum, UInt64),
    amount_minor         SimpleAggregateFunction(sum, Int64),      -- events without an amount add 0
    shipping_cost_minor  SimpleAggregateFunction(sum, Int64),
    newest_event         SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    newest_ingested      SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, channel, event_type, campaign);

CREATE TABLE IF NOT EXISTS customer_activity
(
    customer_id          String,          -- as published; resolve through identity_map
    channel              LowCardinality(String),
    event_type           LowCardinality(String),
    campaign             LowCardinality(String),
    events               SimpleAggregateFunction(sum, UInt64),
    amount_minor         SimpleAggregateFunction(sum, Int64)
)
ENGINE = AggregatingMergeTree
ORDER BY (customer_id, channel, event_type, campaign);

CREATE TABLE IF NOT EXISTS sku_minutes
(
    minute               DateTime('UTC'),        -- toStartOfMinute(event_time), as reports printed it before
    sku                  String,
    channel              LowCardinality(String),
    campaign             LowCardinality(String),
    quantity             SimpleAggregateFunction(sum, Int64),
    revenue_minor        SimpleAggregateFunction(sum, Int64),      -- quantity x unit price
    cost_minor           SimpleAggregateFunction(sum, Int64)       -- quantity x unit cost (0 when not exported)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, sku, channel, campaign);

CREATE MATERIALIZED VIEW IF NOT EXISTS timeline_minutes_from_facts TO timeline_minutes AS
SELECT toStartOfMinute(event_time) AS minute, channel, event_type, campaign, count() AS events,
       toInt64(ifNull(sum(amount_minor), 0)) AS amount_minor, sum(shipping_cost_minor) AS shipping_cost_minor,
       max(event_time) AS newest_event, max(ingested_at) AS newest_ingested
FROM timeline_facts
GROUP BY minute, channel, event_type, campaign;

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_activity_from_facts TO customer_activity AS
SELECT customer_id, channel, event_type, campaign, count() AS events, toInt64(ifNull(sum(amount_minor), 0)) AS amount_minor
FROM timeline_facts
GROUP BY customer_id, channel, event_type, campaign;

CREATE MATERIALIZED VIEW IF NOT EXISTS sku_minutes_from_facts TO sku_minutes AS
SELECT toStartOfMinute(event_time) AS minute, line.1 AS sku, channel, campaign,
       sum(toInt64(line.2)) AS quantity, sum(line.2 * line.3) AS revenue_minor, sum(line.2 * ifNull(line.4, 0)) AS cost_minor
FROM timeline_facts
ARRAY JOIN JSONExtract(lines_json, 'Array(Tuple(sku String, quantity Int32, unit_price_minor Int64, unit_cost_minor Nullable(Int64)))') AS line
WHERE lines_json != ''
GROUP BY minute, sku, channel, campaign;

-- Events stored before this table existed, each once (FINAL), and none the facts already hold: running this
-- again after an interruption adds nothing twice to the rollups.
INSERT INTO timeline_facts
SELECT event_id, event_time, channel, event_type, customer_id, source_id, amount_minor, campaign, shipping_cost_minor,
       related_order_id, if(event_type IN ('order', 'receipt'), JSONExtractRaw(payload_json, 'lines'), '') AS lines_json,
       ingested_at
FROM timeline_events FINAL
WHERE (toStartOfHour(event_time), event_id) NOT IN (SELECT toStartOfHour(event_time), event_id FROM timeline_facts);

CREATE MATERIALIZED VIEW IF NOT EXISTS timeline_facts_from_timeline TO timeline_facts AS
SELECT event_id, event_time, channel, event_type, customer_id, source_id, amount_minor, campaign, shipping_cost_minor,
       related_order_id, if(event_type IN ('order', 'receipt'), JSONExtractRaw(payload_json, 'lines'), '') AS lines_json,
       ingested_at
FROM timeline_events
WHERE (toStartOfHour(event_time), event_id) NOT IN (
    SELECT toStartOfHour(event_time), event_id FROM timeline_facts
    WHERE (toStartOfHour(event_time), event_id) IN (SELECT toStartOfHour(event_time), event_id FROM timeline_events))
ORDER BY event_id
LIMIT 1 BY event_id;

-- Every customer id ever issued and the id it means now (the latest merge): what reports join to count
-- customers as they are now.
CREATE OR REPLACE VIEW current_ids AS
SELECT customer_id, argMax(current_id, version) AS current_id
FROM identity_map
GROUP BY customer_id;

-- The facts under the customer id each event resolves to now (merges re-key them here), one row per event.
CREATE OR REPLACE VIEW facts_current AS
SELECT
    f.event_id AS event_id,
    f.event_time AS event_time,
    f.channel AS channel,
    f.event_type AS event_type,
    if(m.current_id = '', f.customer_id, m.current_id) AS customer_id,
    f.source_id AS source_id,
    f.amount_minor AS amount_minor,
    f.campaign AS campaign,
    f.shipping_cost_minor AS shipping_cost_minor,
    f.related_order_id AS related_order_id
FROM timeline_facts AS f FINAL
LEFT JOIN current_ids AS m ON f.customer_id = m.customer_id;
