-- IT and operations: how far behind the timeline is per channel: the newest event, and how long events took from happening to ClickHouse over the last hour of ingestion.
-- Counts and newest events from the per-minute rollup; the lag reads only the events ingested in that last
-- hour (a minmax index on ingested_at skips the rest).
WITH (SELECT max(newest_ingested) FROM timeline_minutes) AS last_ingested
SELECT r.channel AS channel, r.newest_event AS newest_event, r.events AS events,
       if(l.channel = '', nan, round(l.lag, 1)) AS mean_lag_seconds_last_hour
FROM (SELECT channel, max(newest_event) AS newest_event, sum(events) AS events FROM timeline_minutes GROUP BY channel) AS r
LEFT JOIN (SELECT channel, avg(dateDiff('millisecond', event_time, ingested_at) / 1000) AS lag
           FROM timeline_facts FINAL
           WHERE ingested_at > last_ingested - INTERVAL 1 HOUR
           GROUP BY channel) AS l ON r.channel = l.channel
ORDER BY channel
