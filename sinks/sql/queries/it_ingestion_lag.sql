-- IT and operations: how far behind the timeline is per channel: the newest event, and how long events took from happening to ClickHouse over the last hour of ingestion.
-- Counts and newest events from the per-minute rollup; the lag from the per-ingestion-minute rollup
-- (ingest_minutes: each event once, at its first arrival), the hour's first minute from its events alone.
WITH (SELECT max(newest_ingested) FROM timeline_minutes) AS last_ingested,
     last_ingested - INTERVAL 1 HOUR AS since
SELECT r.channel AS channel, r.newest_event AS newest_event, r.events AS events,
       if(l.events = 0, nan, round(l.lag_ms / l.events / 1000, 1)) AS mean_lag_seconds_last_hour
FROM (SELECT channel, max(newest_event) AS newest_event, sum(events) AS events FROM timeline_minutes GROUP BY channel) AS r
LEFT JOIN (
    SELECT channel, sum(events) AS events, sum(lag_ms) AS lag_ms
    FROM (
        SELECT channel, sum(events) AS events, sum(lag_ms) AS lag_ms
        FROM ingest_minutes WHERE minute > toStartOfMinute(since) GROUP BY channel
        UNION ALL
        SELECT channel, count(), sum(dateDiff('millisecond', event_time, ingested_at))
        FROM timeline_facts FINAL
        WHERE ingested_at > since AND ingested_at < toStartOfMinute(since) + INTERVAL 1 MINUTE
        GROUP BY channel)
    GROUP BY channel) AS l ON r.channel = l.channel
ORDER BY channel
