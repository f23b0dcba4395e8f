-- Console: the announced campaigns, the latest first (the department pages' campaign choice).
SELECT campaign_id, name, starts_at, ends_at FROM campaigns FINAL ORDER BY starts_at DESC, campaign_id
