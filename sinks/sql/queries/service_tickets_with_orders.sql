-- Customer service: tickets and messages that name an order, with the order and whether it belongs to the same customer.
-- Only the orders some contact names are read for the join (the IN list is small: contacts naming orders).
SELECT
    t.event_time AS contacted_at,
    t.channel AS channel,
    t.source_id AS contact,
    o.source_id AS order_id,
    toDecimal128(o.amount_minor, 2) / 100 AS order_amount,
    t.customer_id = o.customer_id AS same_customer
FROM (SELECT * FROM facts_current WHERE related_order_id != '') AS t
INNER JOIN (SELECT * FROM facts_current
            WHERE channel = 'web' AND event_type = 'order'
              AND source_id IN (SELECT related_order_id FROM timeline_facts FINAL WHERE related_order_id != '')) AS o
    ON t.related_order_id = o.source_id
ORDER BY contacted_at, contact
