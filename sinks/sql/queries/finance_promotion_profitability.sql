-- Finance: a campaign's profitability over its window: revenue, cost of goods, shipping, media, net margin.
-- Orders count when they carry the campaign's discount code. Parameter: campaign.
-- The window's whole minutes come from the rollups (timeline_minutes, sku_minutes: each event once); a window
-- edge inside a minute is read from the events of that minute alone (timeline_facts, sorted by time).
WITH (SELECT discount_code FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS code,
     (SELECT media_cost_minor FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS media_minor,
     (SELECT starts_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_start,
     (SELECT ends_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_end,
     if(toStartOfMinute(window_start) = window_start, window_start, toStartOfMinute(window_start) + toIntervalMinute(1)) AS whole_from,
     toStartOfMinute(window_end) AS whole_to
SELECT
    {campaign:String} AS campaign,
    orders.orders AS orders,
    toDecimal128(orders.revenue_minor, 2) / 100 AS revenue,
    toDecimal128(goods.cost_minor, 2) / 100 AS cost_of_goods,
    toDecimal128(orders.shipping_minor, 2) / 100 AS shipping,
    toDecimal128(media_minor, 2) / 100 AS media,
    toDecimal128(orders.revenue_minor - goods.cost_minor - orders.shipping_minor - media_minor, 2) / 100 AS net_margin
FROM (
    SELECT sum(n) AS orders, sum(revenue) AS revenue_minor, sum(shipping) AS shipping_minor
    FROM (
        SELECT sum(events) AS n, sum(amount_minor) AS revenue, sum(shipping_cost_minor) AS shipping
        FROM timeline_minutes
        WHERE event_type IN ('order', 'receipt') AND campaign = code AND minute >= whole_from AND minute < whole_to
        UNION ALL
        SELECT count(), toInt64(ifNull(sum(amount_minor), 0)), sum(shipping_cost_minor)
        FROM timeline_facts FINAL
        WHERE event_type IN ('order', 'receipt') AND campaign = code AND event_time >= window_start
          AND event_time < window_end AND (event_time < whole_from OR event_time >= whole_to))) AS orders
CROSS JOIN (
    SELECT sum(cost) AS cost_minor
    FROM (
        SELECT sum(cost_minor) AS cost
        FROM sku_minutes
        WHERE campaign = code AND minute >= whole_from AND minute < whole_to
        UNION ALL
        SELECT sum(line.2 * ifNull(line.4, 0))
        FROM timeline_facts FINAL
        ARRAY JOIN JSONExtract(lines_json, 'Array(Tuple(sku String, quantity Int32, unit_price_minor Int64, unit_cost_minor Nullable(Int64)))') AS line
        WHERE lines_json != '' AND campaign = code AND event_time >= window_start AND event_time < window_end
          AND (event_time < whole_from OR event_time >= whole_to))) AS goods
