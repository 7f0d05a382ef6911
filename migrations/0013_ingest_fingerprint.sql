-- An idempotency key names one input (issue 26): the SHA-256 of the input file (or of the
-- generator's settings) is recorded with the key, and a rerun with the same key but another
-- input is refused instead of reported as done with its rows dropped. NULL for keys recorded
-- before this migration (those are taken as matching).
ALTER TABLE ingest_keys ADD COLUMN input_fingerprint text;
