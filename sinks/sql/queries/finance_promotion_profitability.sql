-- Finance: a campaign's profitability over its window: revenue, cost of goods, shipping, media, net margin.
-- Orders count when they carry the campaign's discount code. Parameter: campaign.
WITH (SELECT discount_code FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS code,
     (SELECT media_cost_minor FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS media_minor,
     (SELECT starts_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_start,
     (SELECT ends_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_end,
     promotion_orders AS (
        SELECT event_id, amount_minor, JSONExtractInt(payload_json, 'shipping_cost_minor') AS shipping_minor
        FROM timeline_current
        WHERE event_type IN ('order', 'receipt') AND JSONExtractString(payload_json, 'campaign') = code
          AND event_time >= window_start AND event_time < window_end),
     goods AS (
        SELECT sum(quantity * ifNull(unit_cost_minor, 0)) AS cost_minor
        FROM order_lines FINAL
        WHERE event_id IN (SELECT event_id FROM promotion_orders))
SELECT
    {campaign:String} AS campaign,
    (SELECT count() FROM promotion_orders) AS orders,
    toDecimal64((SELECT sum(amount_minor) FROM promotion_orders) / 100, 2) AS revenue,
    toDecimal64((SELECT cost_minor FROM goods) / 100, 2) AS cost_of_goods,
    toDecimal64((SELECT sum(shipping_minor) FROM promotion_orders) / 100, 2) AS shipping,
    toDecimal64(media_minor / 100, 2) AS media,
    toDecimal64(((SELECT sum(amount_minor) FROM promotion_orders) - (SELECT cost_minor FROM goods)
                 - (SELECT sum(shipping_minor) FROM promotion_orders) - media_minor) / 100, 2) AS net_margin
