-- Purchasing: units and revenue per SKU across web and stores, before and during a campaign's window.
-- Parameter: campaign (a campaign_id from the campaigns table).
WITH (SELECT starts_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_start,
     (SELECT ends_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_end
SELECT
    sku,
    sumIf(quantity, event_time < window_start) AS units_before,
    sumIf(quantity, event_time >= window_start AND event_time < window_end) AS units_during,
    sumIf(quantity, channel = 'web' AND event_time >= window_start AND event_time < window_end) AS web_units_during,
    sumIf(quantity, channel = 'store' AND event_time >= window_start AND event_time < window_end) AS store_units_during,
    toDecimal128(sumIf(quantity * unit_price_minor, event_time >= window_start AND event_time < window_end), 2) / 100 AS revenue_during
FROM order_lines FINAL
GROUP BY sku
ORDER BY units_during DESC, sku
