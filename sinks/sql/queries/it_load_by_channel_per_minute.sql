-- IT and operations: events per minute and channel, every minute: the load chart, drawn against the declared capacity.
-- From the per-minute rollup (timeline_minutes: each event once). A minute without events is there, with
-- channel '' and 0 events (WITH FILL), so that a chart's time axis has no gaps.
SELECT minute, channel, sum(events) AS events
FROM timeline_minutes
GROUP BY minute, channel
ORDER BY minute WITH FILL STEP toIntervalMinute(1), channel
