-- Published snapshots of a partition's upsert state (DESIGN.md section 2, Snapshot).
-- A snapshot row is written once, in the same transaction that moves the partition's
-- latest_snapshot pointer by compare-and-swap (src/catalog/snapshots.rs).

ALTER TABLE partitions ADD COLUMN latest_snapshot bigint;

CREATE TABLE snapshots (
    table_name          text NOT NULL,
    partition_id        integer NOT NULL,
    version             bigint NOT NULL CHECK (version >= 1),
    -- Object key and SHA-256 of the manifest.json that lists every file of the snapshot.
    manifest_key        text NOT NULL UNIQUE,
    manifest_checksum   text NOT NULL,
    -- The segments covered, in the manifest's order.
    segment_ids         bigint[] NOT NULL,
    key_count           bigint NOT NULL,
    valid_docs          bigint NOT NULL,
    queryable_docs      bigint NOT NULL,
    largest_comparison  double precision,
    job_id              bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, partition_id, version),
    FOREIGN KEY (table_name, partition_id) REFERENCES partitions (table_name, partition_id) ON DELETE CASCADE
);
