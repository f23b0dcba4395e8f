-- Records some component rejected, with the reason and the raw input; keyed by where they came from
-- so a replayed dead letter is stored once.
CREATE TABLE IF NOT EXISTS dead_letters
(
    component    LowCardinality(String),
    source       String,
    position     String,
    error        String,
    raw          String,
    rejected_at  DateTime64(3, 'UTC'),
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (component, source, position);
