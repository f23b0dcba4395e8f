-- Every channel's events, oldest first, under the customer id each resolves to now; amounts in currency units.
SELECT event_time, channel, event_type, source_id, substring(customer_id, 1, 8) AS customer,
       if(amount_minor IS NULL, NULL, toDecimal128(amount_minor, 2) / 100) AS amount, currency
FROM timeline_current
ORDER BY event_time, channel, source_id
