-- Operations and logistics: orders (web) and receipts (stores) per hour, and shipping cost per web order.
-- From the per-minute rollup (timeline_minutes: each event once): counts need no customer id.
SELECT
    toStartOfHour(minute) AS hour,
    sumIf(events, channel = 'web' AND event_type = 'order') AS web_orders,
    sumIf(events, channel = 'store' AND event_type = 'receipt') AS store_receipts,
    toDecimal128(sumIf(shipping_cost_minor, channel = 'web' AND event_type = 'order'), 2) / 100 AS shipping_cost,
    if(web_orders = 0, NULL, round(toDecimal128(sumIf(shipping_cost_minor, channel = 'web' AND event_type = 'order'), 4) / 100 / web_orders, 2)) AS shipping_cost_per_order
FROM timeline_minutes
WHERE event_type IN ('order', 'receipt')
GROUP BY hour
ORDER BY hour
