-- Marketing: a campaign's visits (app sessions tagged with it), orders (carrying its code), revenue and conversion rate, per channel and in all. Parameter: campaign.
-- From the per-minute rollup (timeline_minutes: each event once): counts need no customer id.
WITH (SELECT discount_code FROM campaigns FINAL WHERE campaign_id = {campaign:String}) AS code
SELECT if(channel = '', 'all', channel) AS channel_name, visits, orders, revenue,
       if(visits = 0, NULL, round(orders / visits, 4)) AS conversion_rate
FROM (
    SELECT channel,
           sumIf(events, event_type = 'session' AND campaign = {campaign:String}) AS visits,
           sumIf(events, event_type IN ('order', 'receipt') AND campaign = code) AS orders,
           toDecimal128(sumIf(amount_minor, event_type IN ('order', 'receipt') AND campaign = code), 2) / 100 AS revenue
    FROM timeline_minutes
    GROUP BY channel WITH ROLLUP)
WHERE visits > 0 OR orders > 0
ORDER BY channel_name
