-- What the department reports count and sum, in a narrow table sorted by time: the reports read it instead of
-- timeline_events. At 10M events a report's time was mostly FINAL (deduplicating replayed deliveries) merging
-- timeline_events, whose parts all span every customer id. Here the sort key starts with the event's hour:
-- parts written at different times cover different hours, FINAL has only the hours they share to merge
-- (a merged day, or an hour no new part touches, costs nothing), and a campaign's window reads only its
-- hours. Duplicates stay exact: every copy of an event has the same time and id, hence the same key.
-- Filled by a materialized view from every timeline_events insert, and from what is already there.
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
    ingested_at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (toStartOfHour(event_time), event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS timeline_facts_from_timeline TO timeline_facts AS
SELECT event_id, event_time, channel, event_type, customer_id, source_id, amount_minor, campaign, shipping_cost_minor,
       related_order_id, ingested_at
FROM timeline_events;

-- Events stored before this table existed (run again after an interruption, FINAL keeps one row per event).
INSERT INTO timeline_facts
SELECT event_id, event_time, channel, event_type, customer_id, source_id, amount_minor, campaign, shipping_cost_minor,
       related_order_id, ingested_at
FROM timeline_events;

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
LEFT JOIN
(
    SELECT customer_id, argMax(current_id, version) AS current_id
    FROM identity_map
    GROUP BY customer_id
) AS m ON f.customer_id = m.customer_id;
