-- What the operator console (issue 16) shows that no other row keeps.
--
-- Rows and bytes each partition's compactions and merges have reclaimed, bumped in the swap's
-- own transaction (catalog::replace), so the figure is exact and outlives pruned job reports and
-- collected segment rows. Counted from this migration on: swaps made before it are not included.
ALTER TABLE partitions ADD COLUMN reclaimed_rows bigint NOT NULL DEFAULT 0;
ALTER TABLE partitions ADD COLUMN reclaimed_bytes bigint NOT NULL DEFAULT 0;

-- Queue depth by state and kind, recorded by the scheduler leader at every gauge sample and kept
-- for a day (the console's chart of the last hour). Small: a row per state and kind per sample.
CREATE TABLE queue_samples (
    sampled_at timestamptz NOT NULL,
    state      job_state NOT NULL,
    kind       text NOT NULL,
    jobs       bigint NOT NULL,
    PRIMARY KEY (sampled_at, state, kind)
);
