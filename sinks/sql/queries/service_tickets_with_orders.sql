-- Customer service: tickets and messages that name an order, with the order and whether it belongs to the same customer.
SELECT
    t.event_time AS contacted_at,
    t.channel AS channel,
    t.source_id AS contact,
    o.source_id AS order_id,
    toDecimal128(o.amount_minor, 2) / 100 AS order_amount,
    t.customer_id = o.customer_id AS same_customer
FROM (SELECT * FROM timeline_current WHERE related_order_id != '') AS t
INNER JOIN (SELECT * FROM timeline_current WHERE channel = 'web' AND event_type = 'order') AS o
    ON t.related_order_id = o.source_id
ORDER BY contacted_at, contact
