-- Customer service: one customer's whole history across channels, oldest first, under their current id (events published under ids later merged into it included). Parameter: customer (any id ever issued).
WITH (SELECT if(count() = 0, {customer:String}, argMax(current_id, version)) FROM identity_map
      WHERE customer_id = {customer:String}) AS current
SELECT event_time, channel, event_type, source_id,
       if(amount_minor IS NULL, NULL, toDecimal64(amount_minor / 100, 2)) AS amount,
       nullIf(JSONExtractString(payload_json, 'status'), '') AS status,
       nullIf(JSONExtractString(payload_json, 'related_order_id'), '') AS related_order,
       nullIf(JSONExtractString(payload_json, 'text'), '') AS text
FROM (
    -- by primary key: every id that means this customer now (timeline_events is sorted by customer_id)
    SELECT * FROM timeline_events FINAL
    WHERE customer_id IN (SELECT current UNION ALL SELECT customer_id FROM identity_map FINAL WHERE current_id = current)
    ORDER BY ingested_at DESC
    LIMIT 1 BY event_id)
ORDER BY event_time, source_id
