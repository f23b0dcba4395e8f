-- What ClickHouse refuses to store, so that a wrong clock or a mis-mapped field upstream ends in
-- dead_letters with the reason (the sink isolates refused rows) instead of in every department's numbers.
ALTER TABLE timeline_events ADD CONSTRAINT IF NOT EXISTS event_time_plausible
    CHECK event_time >= '2000-01-01 00:00:00' AND event_time < '2100-01-01 00:00:00';
ALTER TABLE campaigns ADD CONSTRAINT IF NOT EXISTS window_not_empty CHECK ends_at > starts_at;
