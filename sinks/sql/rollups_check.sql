-- Events in timeline_facts (each once) against what each rollup counted. They differ only when a process was
-- killed between a facts insert and its rollups' (the replay then finds the facts there and adds nothing).
SELECT
    (SELECT count() FROM timeline_facts FINAL) AS facts,
    (SELECT sum(events) FROM timeline_minutes) AS in_minutes,
    (SELECT sum(events) FROM customer_activity) AS in_customers,
    (SELECT sum(events) FROM ingest_minutes) AS in_ingest_minutes,
    (SELECT count() FROM order_mentions FINAL) AS mentions,
    (SELECT count() FROM timeline_facts FINAL WHERE related_order_id != '') AS mentions_expected,
    (SELECT count() FROM (SELECT DISTINCT minute, channel, campaign FROM sku_minutes)) AS sku_keys,
    (SELECT count() FROM (SELECT DISTINCT toStartOfMinute(event_time) AS minute, channel, campaign FROM timeline_facts FINAL
                          WHERE lines_json != '' AND JSONLength(lines_json) > 0)) AS sku_keys_expected
