-- Which channels each customer reached support on, and which tickets: a rollup of event_details (support rows)
-- for the multichannel-contacts report, whose size grows with tickets, not with ticket updates. Neither a
-- contact channel nor a ticket id is personal; the sink still deletes a forgotten customer's rows here, as in
-- event_details. Duplicates (a replayed delivery) add nothing: the report counts distinct values.
CREATE TABLE IF NOT EXISTS support_contacts
(
    customer_id      String,          -- as published; resolve through identity_map
    contact_channel  LowCardinality(String),
    ticket_id        String
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, contact_channel, ticket_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS support_contacts_from_details TO support_contacts AS
SELECT DISTINCT customer_id, JSONExtractString(attributes_json, 'contact_channel') AS contact_channel,
       JSONExtractString(attributes_json, 'ticket_id') AS ticket_id
FROM event_details
WHERE channel = 'support';

INSERT INTO support_contacts
SELECT DISTINCT customer_id, JSONExtractString(attributes_json, 'contact_channel'), JSONExtractString(attributes_json, 'ticket_id')
FROM event_details
WHERE channel = 'support';
