-- Sequence numbers handed out to an ingest that has not registered its segments yet.
--
-- A merge gives its output the largest sequence of its inputs (src/compaction/merge.rs). That is
-- only safe if no segment outside the inputs can show up later with a sequence between theirs,
-- so a merge's catalog transaction refuses while a reservation inside that range is outstanding.
-- Ingest deletes its reservations when it registers its segments (in the same transaction) or
-- gives up; GC expires reservations of crashed ingests, and registration then fails, fenced.
CREATE TABLE sequence_reservations (
    table_name   text NOT NULL,
    partition_id integer NOT NULL,
    sequence     bigint NOT NULL,
    reserved_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, partition_id, sequence),
    FOREIGN KEY (table_name, partition_id) REFERENCES partitions (table_name, partition_id) ON DELETE CASCADE
);

CREATE INDEX sequence_reservations_age_idx ON sequence_reservations (reserved_at);
