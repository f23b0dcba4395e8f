-- Customer service: one customer's whole history across channels, oldest first, under their current id (events published under ids later merged into it included), with what they wrote. Parameter: customer (any id ever issued).
WITH (SELECT if(count() = 0, {customer:String}, argMax(current_id, version)) FROM identity_map
      WHERE customer_id = {customer:String}) AS current,
     -- every id that means this customer now: both tables are sorted by customer_id, so these are primary-key reads
     (SELECT groupArray(id) FROM (SELECT current AS id UNION ALL
                                  SELECT customer_id FROM identity_map FINAL WHERE current_id = current)) AS ids
SELECT e.event_time AS event_time, e.channel AS channel, e.event_type AS event_type, e.source_id AS source_id,
       if(e.amount_minor IS NULL, NULL, toDecimal128(e.amount_minor, 2) / 100) AS amount,
       nullIf(e.status, '') AS status,
       nullIf(e.related_order_id, '') AS related_order,
       nullIf(d.text, '') AS text
-- One row per event as FINAL would keep it (the latest delivery), but deduplicated among this customer's rows
-- alone: FINAL merged whole granules of every part, most of this query's time.
FROM (SELECT event_id, event_time, channel, event_type, source_id, amount_minor, status, related_order_id
      FROM timeline_events WHERE has(ids, customer_id)
      ORDER BY event_id, ingested_at DESC LIMIT 1 BY event_id) AS e
LEFT JOIN (SELECT event_id, text FROM event_details WHERE has(ids, customer_id)
           ORDER BY event_id, ingested_at DESC LIMIT 1 BY event_id) AS d ON e.event_id = d.event_id
ORDER BY event_time, source_id
