-- Personal data of events, apart from them: the free text of tickets and social messages (people write
-- their phone number, address, order troubles...) and the channel's attributes (shipping postcode and
-- city, the agent's name...). The sink moves them out of payload_json, so timeline_events, which every
-- department reads, holds none; only customer service reads this table (sinks/sql/access/roles.sql).
-- Erasure deletes a customer's rows here. Sorted like the timeline, for per-customer reads.
CREATE TABLE IF NOT EXISTS event_details
(
    event_id         String,
    customer_id      String,          -- as published; resolve through identity_map for the current id
    event_time       DateTime64(3, 'UTC'),
    channel          LowCardinality(String),
    text             String,
    attributes_json  String,          -- the channel's attributes, a JSON object
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (customer_id, event_time, event_id);

-- identity_map is read by every department: the identifier that linked two customers is kept as a
-- SHA-256 of "kind:value" (find one with lower(hex(SHA256('email:alice@example.com')))), not in clear.
ALTER TABLE identity_map RENAME COLUMN IF EXISTS identifier TO identifier_sha256;
ALTER TABLE identity_map UPDATE identifier_sha256 = lower(hex(SHA256(identifier_sha256)))
    WHERE position(identifier_sha256, ':') > 0;  -- "kind:value" in clear; a hash has no colon
