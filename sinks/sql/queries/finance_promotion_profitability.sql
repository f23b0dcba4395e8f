-- Finance: a campaign's profitability over its window: revenue, cost of goods, shipping, media, net margin.
-- Orders count when they carry the campaign's discount code. Parameter: campaign.
-- Totals need no customer id, so they read the events (one row per event with FINAL) and their lines in one pass each.
WITH (SELECT discount_code FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS code,
     (SELECT media_cost_minor FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS media_minor,
     (SELECT starts_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_start,
     (SELECT ends_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_end
SELECT
    {campaign:String} AS campaign,
    orders.orders AS orders,
    toDecimal128(orders.revenue_minor, 2) / 100 AS revenue,
    toDecimal128(goods.cost_minor, 2) / 100 AS cost_of_goods,
    toDecimal128(orders.shipping_minor, 2) / 100 AS shipping,
    toDecimal128(media_minor, 2) / 100 AS media,
    toDecimal128(orders.revenue_minor - goods.cost_minor - orders.shipping_minor - media_minor, 2) / 100 AS net_margin
FROM (
    SELECT count() AS orders, ifNull(sum(amount_minor), 0) AS revenue_minor,
           sum(shipping_cost_minor) AS shipping_minor
    FROM timeline_facts FINAL
    WHERE event_type IN ('order', 'receipt') AND event_time >= window_start AND event_time < window_end
      AND campaign = code) AS orders
CROSS JOIN (
    -- order_lines holds the lines of orders and receipts with their event's campaign code and time
    SELECT sum(quantity * ifNull(unit_cost_minor, 0)) AS cost_minor
    FROM order_lines FINAL
    WHERE campaign = code AND event_time >= window_start AND event_time < window_end) AS goods
