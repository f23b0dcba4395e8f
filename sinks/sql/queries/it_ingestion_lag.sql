-- IT and operations: how far behind the timeline is per channel: the newest event, and how long events took from happening to ClickHouse over the last hour of ingestion.
SELECT
    channel,
    max(event_time) AS newest_event,
    count() AS events,
    round(avgIf(dateDiff('millisecond', event_time, ingested_at) / 1000,
                ingested_at > (SELECT max(ingested_at) FROM timeline_facts) - INTERVAL 1 HOUR), 1) AS mean_lag_seconds_last_hour
FROM timeline_facts FINAL
GROUP BY channel
ORDER BY channel
