-- IT and operations: events per minute per channel against the declared capacity, flagging minutes over capacity and spikes (over 3 times the median minute) that no announced campaign covers. Parameter: capacity (events per minute).
WITH per_minute AS (
        SELECT toStartOfMinute(event_time) AS minute, count() AS events,
               groupArray((channel, 1)) AS by_channel
        FROM timeline_current GROUP BY minute),
     (SELECT median(events) FROM per_minute) AS typical
SELECT
    minute,
    events,
    arrayStringConcat(arrayMap(x -> concat(x.1, ':', toString(x.2)),
        arraySort(x -> x.1, arrayMap(c -> (c, countEqual(by_channel.1, c)), arrayDistinct(by_channel.1)))), ' ') AS per_channel,
    (SELECT groupArray(campaign_id) FROM campaigns FINAL WHERE minute >= starts_at AND minute < ends_at) AS campaigns_active,
    multiIf(events > {capacity:UInt64}, 'over capacity',
            events > 3 * typical AND empty(campaigns_active), 'spike without an announced campaign', '') AS flag
FROM per_minute
WHERE flag != '' OR events >= (SELECT quantile(0.99)(events) FROM per_minute)
ORDER BY minute
