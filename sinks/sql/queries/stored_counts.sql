-- Events and dead letters as analysts see them (one row per event id): what the demo and benchmarks wait for.
SELECT
    (SELECT count() FROM timeline_events FINAL) AS timeline_events,
    (SELECT count() FROM dead_letters FINAL) AS dead_letters
