-- Console: the customers (under their current id) that what an agent typed names: one of their identifiers
-- (kind:value, as the worker normalises them), a social handle on any platform, an order or receipt number, or
-- a customer id ever issued. Parameters: identifiers, handle, term.
WITH found AS (
    SELECT customer_id AS id FROM customer_identities FINAL
    WHERE deleted = 0 AND (hasAny(identifiers, {identifiers:Array(String)})
          OR ({handle:String} != '' AND arrayExists(i -> startsWith(i, 'social_handle:')
                                                   AND endsWith(i, concat(':', {handle:String})), identifiers)))
    UNION ALL
    SELECT customer_id FROM timeline_events FINAL
    WHERE event_type IN ('order', 'receipt') AND upper(source_id) = upper({term:String})
    UNION ALL
    SELECT customer_id FROM identity_map WHERE customer_id = {term:String}
    UNION ALL
    SELECT customer_id FROM customer_profiles FINAL WHERE customer_id = {term:String}),
current AS (
    SELECT DISTINCT if(m.current_id = '', f.id, m.current_id) AS customer_id
    FROM found AS f
    LEFT JOIN (SELECT customer_id, argMax(current_id, version) AS current_id FROM identity_map
               WHERE customer_id IN (SELECT id FROM found) GROUP BY customer_id) AS m ON f.id = m.customer_id)
SELECT p.customer_id AS customer_id, p.last_seen AS last_seen, p.online_orders + p.store_orders AS orders,
       toDecimal128(p.online_revenue_minor + p.store_revenue_minor, 2) / 100 AS revenue, p.open_tickets AS open_tickets,
       p.best_customer AS best_customer
FROM customer_profiles AS p FINAL
WHERE p.deleted = 0 AND p.customer_id IN (SELECT customer_id FROM current)
ORDER BY last_seen DESC, customer_id
LIMIT 50
