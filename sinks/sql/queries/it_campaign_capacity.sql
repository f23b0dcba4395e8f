-- IT and operations: for each announced campaign, the load it promises (typical events per minute plus its expected extra visitors spread over its window) against the declared capacity, flagged when it would not fit. Parameter: capacity (events per minute).
WITH (SELECT median(n) FROM (SELECT sum(events) AS n FROM timeline_minutes GROUP BY minute)) AS typical
SELECT
    campaign_id,
    starts_at,
    ends_at,
    expected_extra_visitors,
    round(typical + expected_extra_visitors / greatest(dateDiff('minute', starts_at, ends_at), 1), 1) AS expected_per_minute,
    {capacity:UInt64} AS capacity,
    if(expected_per_minute > capacity, 'expected load over capacity', '') AS flag
FROM campaigns FINAL
ORDER BY starts_at, campaign_id
