-- Sequence reservations belong to a live ingest (issue 10). The ingest that made a reservation
-- (`owner`) renews `expires_at` while it runs; once the lease has run out, the next `plan`,
-- `merge` or `gc` of the table deletes the row. Expiry takes effect only by that deletion, in the
-- deleting transaction, so a registration and a merge that races it serialize on the row: the
-- registration deletes its own rows (by owner) and fails cleanly when they are gone.
ALTER TABLE sequence_reservations ADD COLUMN owner text NOT NULL DEFAULT '';
ALTER TABLE sequence_reservations ADD COLUMN expires_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX sequence_reservations_owner_idx ON sequence_reservations (owner);
CREATE INDEX sequence_reservations_expiry_idx ON sequence_reservations (table_name, expires_at);

-- Ingests registered under a client-chosen idempotency key: a rerun with the same key finds its
-- row and registers nothing. Written in the registration's own transaction.
CREATE TABLE ingest_keys (
    table_name       text NOT NULL REFERENCES tables (name) ON DELETE CASCADE,
    idempotency_key  text NOT NULL,
    segment_ids      bigint[] NOT NULL,
    row_count        bigint NOT NULL,
    byte_size        bigint NOT NULL,
    registered_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, idempotency_key)
);
