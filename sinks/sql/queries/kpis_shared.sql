-- Shared KPIs every department reads, so the numbers agree: revenue, orders, traffic (app sessions), conversion rate, customers, re-purchase rate, peak load.
-- Totals and the peak minute from the per-minute rollup; buying customers from the per-customer rollup, under
-- the ids they resolve to now (merges re-key them); a sale that names nobody (customer id '') is revenue from no
-- known customer. Both hold each event once, whatever the replays.
SELECT
    revenue, orders, traffic, conversion_rate,
    (SELECT uniqExact(if(m.current_id = '', a.customer_id, m.current_id))
     FROM (SELECT DISTINCT customer_id FROM customer_activity
           WHERE event_type IN ('order', 'receipt') AND customer_id != '') AS a
     LEFT JOIN current_ids AS m
         ON a.customer_id = m.customer_id) AS buying_customers,
    (SELECT round(countIf(repurchased = 1) / count(), 4) FROM customer_profiles FINAL
     WHERE deleted = 0 AND online_orders + store_orders > 0) AS repurchase_rate,
    (SELECT max(n) FROM (SELECT sum(events) AS n FROM timeline_minutes GROUP BY minute)) AS peak_events_per_minute
FROM (
    SELECT
        toDecimal128(sumIf(amount_minor, event_type IN ('order', 'receipt')), 2) / 100 AS revenue,
        sumIf(events, event_type IN ('order', 'receipt')) AS orders,
        sumIf(events, event_type = 'session') AS traffic,
        if(traffic = 0, NULL, round(sumIf(events, channel = 'web' AND event_type = 'order') / traffic, 4)) AS conversion_rate
    FROM timeline_minutes)
