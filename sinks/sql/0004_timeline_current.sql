-- The timeline as analysts should read it: one row per event (the latest delivery), with the
-- customer id it resolves to now through identity_map.
CREATE VIEW IF NOT EXISTS timeline_current AS
SELECT
    e.event_id AS event_id,
    e.event_time AS event_time,
    e.channel AS channel,
    e.event_type AS event_type,
    if(m.current_id = '', e.customer_id, m.current_id) AS customer_id,
    e.customer_id AS published_customer_id,
    e.source_id AS source_id,
    e.amount_minor AS amount_minor,
    e.currency AS currency,
    e.payload_json AS payload_json
FROM
(
    SELECT * FROM timeline_events FINAL
    ORDER BY ingested_at DESC
    LIMIT 1 BY event_id
) AS e
LEFT JOIN
(
    SELECT customer_id, argMax(current_id, version) AS current_id
    FROM identity_map
    GROUP BY customer_id
) AS m ON e.customer_id = m.customer_id;
