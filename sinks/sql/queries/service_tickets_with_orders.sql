-- Customer service: tickets and messages that name an order, with the order and whether it belongs to the same customer.
-- The contacts from order_mentions (each once); the orders they name looked up by source id (a bloom filter
-- on timeline_facts), both under the ids customers resolve to now.
SELECT
    t.event_time AS contacted_at,
    t.channel AS channel,
    t.source_id AS contact,
    o.source_id AS order_id,
    toDecimal128(o.amount_minor, 2) / 100 AS order_amount,
    t.customer_id = o.customer_id AS same_customer
FROM (SELECT c.event_time AS event_time, c.channel AS channel, c.source_id AS source_id,
             c.related_order_id AS related_order_id, if(m.current_id = '', c.customer_id, m.current_id) AS customer_id
      FROM order_mentions AS c FINAL LEFT JOIN current_ids AS m ON c.customer_id = m.customer_id) AS t
INNER JOIN (SELECT * FROM facts_current
            WHERE channel = 'web' AND event_type = 'order'
              AND source_id IN (SELECT related_order_id FROM order_mentions)) AS o
    ON t.related_order_id = o.source_id
ORDER BY contacted_at, contact
