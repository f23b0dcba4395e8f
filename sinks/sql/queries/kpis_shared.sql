-- Shared KPIs every department reads, so the numbers agree: revenue, orders, traffic (app sessions), conversion rate, customers, re-purchase rate, peak load.
-- Totals need no customer id: one pass over the facts; only the count of buying customers resolves ids (merges re-key them), over the orders alone.
SELECT
    revenue, orders, traffic, conversion_rate,
    (SELECT uniqExact(customer_id) FROM facts_current WHERE event_type IN ('order', 'receipt')) AS buying_customers,
    (SELECT round(countIf(repurchased = 1) / count(), 4) FROM customer_profiles FINAL
     WHERE deleted = 0 AND online_orders + store_orders > 0) AS repurchase_rate,
    (SELECT max(n) FROM (SELECT count() AS n FROM timeline_facts FINAL GROUP BY toStartOfMinute(event_time))) AS peak_events_per_minute
FROM (
    SELECT
        toDecimal128(ifNull(sumIf(amount_minor, event_type IN ('order', 'receipt')), 0), 2) / 100 AS revenue,
        countIf(event_type IN ('order', 'receipt')) AS orders,
        countIf(event_type = 'session') AS traffic,
        if(traffic = 0, NULL, round(countIf(channel = 'web' AND event_type = 'order') / traffic, 4)) AS conversion_rate
    FROM timeline_facts FINAL)
