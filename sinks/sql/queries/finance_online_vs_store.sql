-- Finance: revenue online and in store of the customers who bought on both, and of everyone.
-- From the per-customer rollup (customer_activity: each event once), under the ids customers resolve to now;
-- sales that name nobody (customer id '': a receipt without a card) are a row of their own, of no customers.
SELECT
    multiIf(customer_id = '', 'no known customer', online > 0 AND store > 0, 'bought online and in store',
            online > 0, 'online only', 'store only') AS customers,
    countIf(customer_id != '') AS how_many,
    toDecimal128(sum(online), 2) / 100 AS online_revenue,
    toDecimal128(sum(store), 2) / 100 AS store_revenue
FROM (
    SELECT if(m.current_id = '', a.customer_id, m.current_id) AS customer_id,
           sumIf(a.amount_minor, a.channel = 'web' AND a.event_type = 'order') AS online,
           sumIf(a.amount_minor, a.channel = 'store' AND a.event_type = 'receipt') AS store
    FROM (SELECT customer_id, channel, event_type, amount_minor FROM customer_activity
          WHERE event_type IN ('order', 'receipt')) AS a
    LEFT JOIN current_ids AS m
        ON a.customer_id = m.customer_id
    GROUP BY customer_id)
GROUP BY customers
ORDER BY customers
