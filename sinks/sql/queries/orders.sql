-- Web orders on the timeline, oldest first, amounts in currency units.
SELECT source_id AS order_id, event_time, substring(customer_id, 1, 8) AS customer,
       toDecimal128(amount_minor, 2) / 100 AS amount, currency
FROM timeline_events FINAL
WHERE channel = 'web' AND event_type = 'order'
ORDER BY event_time, source_id
