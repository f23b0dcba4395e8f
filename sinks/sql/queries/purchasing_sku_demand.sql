-- Purchasing: units and revenue per SKU across web and stores, before and during a campaign's window.
-- Parameter: campaign (a campaign_id from the campaigns table).
-- Whole minutes from the SKU rollup (sku_minutes: each order or receipt once); a window edge inside a minute
-- from the lines of that minute's events alone (timeline_facts, sorted by time).
WITH (SELECT starts_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_start,
     (SELECT ends_at FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS window_end,
     if(toStartOfMinute(window_start) = window_start, window_start, toStartOfMinute(window_start) + toIntervalMinute(1)) AS whole_from,
     toStartOfMinute(window_end) AS whole_to
SELECT
    sku,
    sum(before) AS units_before,
    sum(during) AS units_during,
    sum(web_during) AS web_units_during,
    sum(store_during) AS store_units_during,
    toDecimal128(sum(revenue_during), 2) / 100 AS revenue_during
FROM (
    SELECT sku,
           sumIf(quantity, minute < toStartOfMinute(window_start)) AS before,
           sumIf(quantity, minute >= whole_from AND minute < whole_to) AS during,
           sumIf(quantity, channel = 'web' AND minute >= whole_from AND minute < whole_to) AS web_during,
           sumIf(quantity, channel = 'store' AND minute >= whole_from AND minute < whole_to) AS store_during,
           sumIf(revenue_minor, minute >= whole_from AND minute < whole_to) AS revenue_during
    FROM sku_minutes
    GROUP BY sku
    UNION ALL
    SELECT line.1 AS sku,
           sumIf(toInt64(line.2), event_time < window_start),
           sumIf(toInt64(line.2), event_time >= window_start AND event_time < window_end),
           sumIf(toInt64(line.2), channel = 'web' AND event_time >= window_start AND event_time < window_end),
           sumIf(toInt64(line.2), channel = 'store' AND event_time >= window_start AND event_time < window_end),
           sumIf(line.2 * line.3, event_time >= window_start AND event_time < window_end)
    FROM timeline_facts FINAL
    ARRAY JOIN JSONExtract(lines_json, 'Array(Tuple(sku String, quantity Int32, unit_price_minor Int64, unit_cost_minor Nullable(Int64)))') AS line
    WHERE lines_json != '' AND ((event_time >= toStartOfMinute(window_start) AND event_time < whole_from)
                                OR (event_time >= whole_to AND event_time < window_end))
    GROUP BY sku)
GROUP BY sku
ORDER BY units_during DESC, sku
