-- Finance: revenue online and in store of the customers who bought on both, and of everyone.
SELECT
    if(online > 0 AND store > 0, 'bought online and in store', if(online > 0, 'online only', 'store only')) AS customers,
    count() AS how_many,
    toDecimal128(sum(online), 2) / 100 AS online_revenue,
    toDecimal128(sum(store), 2) / 100 AS store_revenue
FROM (
    SELECT customer_id,
           -- ifNull: a sum over no amounts is NULL in ClickHouse, and an online-only customer has no store amount
           ifNull(sumIf(amount_minor, channel = 'web' AND event_type = 'order'), 0) AS online,
           ifNull(sumIf(amount_minor, channel = 'store' AND event_type = 'receipt'), 0) AS store
    FROM facts_current
    WHERE event_type IN ('order', 'receipt')
    GROUP BY customer_id)
GROUP BY customers
ORDER BY customers
