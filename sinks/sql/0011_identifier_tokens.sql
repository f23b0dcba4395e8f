-- identity_map kept an unsalted SHA-256 of "kind:value", which a dictionary of French phone numbers
-- reverses in minutes, and every department reads it. It now holds the merge's identifier as the worker
-- publishes it: kind:token, a keyed hash under the hub secret (infra/vault.py), which nobody without the
-- vault can test a guess against. The old hashes are cleared (they cannot be converted without the values).
ALTER TABLE identity_map RENAME COLUMN IF EXISTS identifier_sha256 TO identifier_token;
ALTER TABLE identity_map UPDATE identifier_token = '' WHERE position(identifier_token, ':') = 0;
