-- IT and operations: events per minute per channel against the declared capacity, flagging minutes over capacity and spikes (over 3 times the median minute) that no announced campaign covers. Parameter: capacity (events per minute).
-- From the per-minute rollup (timeline_minutes: each event once), whatever the number of events.
SELECT
    minute,
    events,
    per_channel,
    (SELECT groupArray(campaign_id) FROM campaigns FINAL WHERE minute >= starts_at AND minute < ends_at) AS campaigns_active,
    multiIf(events > {capacity:UInt64}, 'over capacity',
            events > 3 * typical AND empty(campaigns_active), 'spike without an announced campaign', '') AS flag
FROM (
    SELECT minute, events, per_channel,
           median(events) OVER () AS typical,
           quantile(0.99)(events) OVER () AS busiest
    FROM (
        SELECT minute, sum(n) AS events,
               arrayStringConcat(arraySort(groupArray(concat(channel, ':', toString(n)))), ' ') AS per_channel
        FROM (SELECT minute, channel, sum(events) AS n FROM timeline_minutes GROUP BY minute, channel)
        GROUP BY minute))
WHERE flag != '' OR events >= busiest
ORDER BY minute
