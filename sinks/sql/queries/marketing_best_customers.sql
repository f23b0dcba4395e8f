-- Marketing: the best-customer segment's size, how many of them the campaign reached (an order with its code or a visit it tagged), and the re-purchase rate of customers who ordered. Parameter: campaign.
WITH (SELECT discount_code FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS code,
     best AS (SELECT customer_id FROM customer_profiles FINAL WHERE best_customer = 1 AND deleted = 0),
     -- from the per-customer rollup (each event once), under the ids customers resolve to now
     reached AS (SELECT DISTINCT if(m.current_id = '', a.customer_id, m.current_id) AS customer_id
                 FROM (SELECT DISTINCT customer_id FROM customer_activity WHERE campaign IN (code, {campaign:String})) AS a
                 LEFT JOIN current_ids AS m ON a.customer_id = m.customer_id)
SELECT
    (SELECT count() FROM best) AS best_customers,
    (SELECT count() FROM best WHERE customer_id IN (SELECT customer_id FROM reached)) AS best_customers_reached,
    if(best_customers = 0, NULL, round(best_customers_reached / best_customers, 4)) AS reach_rate,
    (SELECT round(countIf(repurchased = 1) / count(), 4) FROM customer_profiles FINAL
     WHERE deleted = 0 AND online_orders + store_orders > 0) AS repurchase_rate
