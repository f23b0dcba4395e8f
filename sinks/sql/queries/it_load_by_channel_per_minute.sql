-- IT and operations: events per minute and channel, every minute: the load chart, drawn against the declared capacity.
-- Counts need no customer id: one row per event with FINAL, in one pass. A minute without events is there,
-- with channel '' and 0 events (WITH FILL), so that a chart's time axis has no gaps.
SELECT toStartOfMinute(event_time) AS minute, channel, count() AS events
FROM timeline_facts FINAL
GROUP BY minute, channel
ORDER BY minute WITH FILL STEP toIntervalMinute(1), channel
