-- Every customer id ever issued, to the id it means now. The timeline keeps the id an event was
-- published with; merges re-key history at query time through this map (view timeline_current),
-- without rewriting events. A row per (id, version); the highest version wins. The sink writes the
-- transitive result: when B is merged into C, every id that meant B is rewritten to mean C.
CREATE TABLE IF NOT EXISTS identity_map
(
    customer_id   String,
    current_id    String,
    version       UInt64,          -- the merge time in ms: later merges win
    merge_event   Nullable(String),
    identifier    String,          -- kind:value that linked them
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id;
