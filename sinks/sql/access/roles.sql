-- Department roles for a ClickHouse server (chDB has no access control). `omnihub clickhouse roles`
-- prints this with {database} filled in; `--apply` runs it. Every department reads the events,
-- order lines, campaigns, profiles and identity map (its identifiers hashed); only customer service
-- reads personal data: customer_identities (emails, phones, handles, cards) and event_details (what
-- people wrote, addresses). IT and operations see why records were dead-lettered, not the raw records,
-- which hold whatever the channel sent. Grant a role to a person: GRANT omnihub_marketing TO alice;
CREATE ROLE IF NOT EXISTS omnihub_marketing;
CREATE ROLE IF NOT EXISTS omnihub_it;
CREATE ROLE IF NOT EXISTS omnihub_purchasing;
CREATE ROLE IF NOT EXISTS omnihub_operations;
CREATE ROLE IF NOT EXISTS omnihub_service;
CREATE ROLE IF NOT EXISTS omnihub_finance;
GRANT SELECT ON {database}.timeline_events TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.timeline_current TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.timeline_facts TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.facts_current TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.timeline_minutes TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.customer_activity TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.sku_minutes TO omnihub_marketing, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.identity_map TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.current_ids TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.order_lines TO omnihub_marketing, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT ON {database}.campaigns TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_finance;
GRANT SELECT ON {database}.customer_profiles TO omnihub_marketing, omnihub_it, omnihub_purchasing, omnihub_operations, omnihub_service, omnihub_finance;
GRANT SELECT(component, source, position, error, rejected_at, ingested_at) ON {database}.dead_letters TO omnihub_it, omnihub_operations;
GRANT SELECT ON {database}.customer_identities TO omnihub_service;
GRANT SELECT ON {database}.event_details TO omnihub_service;
GRANT SELECT ON {database}.support_contacts TO omnihub_service;
GRANT SELECT ON {database}.order_mentions TO omnihub_service;
GRANT SELECT ON {database}.ingest_minutes TO omnihub_it, omnihub_operations;
