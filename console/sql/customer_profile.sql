-- Console: one customer's profile (the 360 figures) and their identifiers. Parameter: customer (a current id).
SELECT p.customer_id AS customer_id, p.first_seen AS first_seen, p.last_seen AS last_seen, p.events AS events,
       p.online_orders AS online_orders, toDecimal128(p.online_revenue_minor, 2) / 100 AS online_revenue,
       p.store_orders AS store_orders, toDecimal128(p.store_revenue_minor, 2) / 100 AS store_revenue,
       toDecimal128(p.average_basket_minor, 2) / 100 AS average_basket, p.repurchased AS repurchased,
       p.open_tickets AS open_tickets, p.last_contact_channel AS last_contact_channel,
       p.social_mentions AS social_mentions,
       if(p.best_customer = 1, 'best customers', 'everyone else') AS segment,
       (SELECT any(identifiers) FROM customer_identities FINAL
        WHERE customer_id = {customer:String} AND deleted = 0) AS identifiers
FROM customer_profiles AS p FINAL
WHERE p.customer_id = {customer:String} AND p.deleted = 0
