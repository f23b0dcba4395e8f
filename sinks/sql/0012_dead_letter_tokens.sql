-- A connector's dead letter names the people in its raw record by token (kind:token): an erasure deletes
-- the rows of the tokens it lists, as the raw record stored here was opened from its sealed form.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS identifier_tokens Array(String);
