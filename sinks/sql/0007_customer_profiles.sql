-- The 360 view of each customer (from the compacted customer-profiles topic), without personal data:
-- identifiers live in customer_identities, which only customer service reads. A tombstone (an id
-- merged away or forgotten) is stored as deleted = 1. The latest record per customer wins.
CREATE TABLE IF NOT EXISTS customer_profiles
(
    customer_id           String,
    version               UInt32,
    merged_ids            Array(String),
    first_seen            Nullable(DateTime64(3, 'UTC')),
    last_seen             Nullable(DateTime64(3, 'UTC')),
    events                UInt64,
    online_orders         UInt32,
    online_revenue_minor  Int64,
    store_orders          UInt32,
    store_revenue_minor   Int64,
    average_basket_minor  Int64,
    repurchased           UInt8,
    open_tickets          UInt32,
    last_contact_channel  Nullable(String),
    social_mentions       UInt32,
    sentiment             Nullable(Float64),
    best_customer         UInt8,
    deleted               UInt8,
    updated_at            DateTime64(3, 'UTC')     -- the Kafka record's timestamp: later wins
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY customer_id;

-- Personal data: a customer's identifiers (email, phone, handles, cards), apart from the events.
CREATE TABLE IF NOT EXISTS customer_identities
(
    customer_id   String,
    identifiers   Array(String),                   -- kind:value
    deleted       UInt8,
    updated_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY customer_id;
