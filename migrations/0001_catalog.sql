-- The catalog: tables, their partitions and segments (DESIGN.md sections 2 and 7).
-- Every statement that must change several rows atomically runs in one transaction in src/catalog.

CREATE TABLE tables (
    name        text PRIMARY KEY,
    -- The validated table declaration (src/table.rs TableConfig) as JSON.
    config      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE partitions (
    table_name      text NOT NULL REFERENCES tables (name) ON DELETE CASCADE,
    partition_id    integer NOT NULL CHECK (partition_id >= 0),
    -- Next per-partition sequence number to hand out; sequences order segments by creation.
    next_sequence   bigint NOT NULL DEFAULT 0 CHECK (next_sequence >= 0),
    PRIMARY KEY (table_name, partition_id)
);

CREATE TABLE segments (
    id               bigserial PRIMARY KEY,
    table_name       text NOT NULL,
    partition_id     integer NOT NULL,
    sequence         bigint NOT NULL CHECK (sequence >= 0),
    name             text NOT NULL UNIQUE,
    object_key       text NOT NULL UNIQUE,
    row_count        bigint NOT NULL CHECK (row_count >= 0),
    byte_size        bigint NOT NULL CHECK (byte_size >= 0),
    -- SHA-256 (hex) of the Parquet object.
    checksum         text NOT NULL,
    -- Comparison-column range, as float8 (exact for float64 and for integers below 2^53).
    min_comparison   double precision,
    max_comparison   double precision,
    state            text NOT NULL CHECK (state IN ('online', 'replaced', 'dropped')),
    -- Lineage: the segments this one replaced, and the one that replaced it.
    replaces         bigint[] NOT NULL DEFAULT '{}',
    replaced_by      bigint REFERENCES segments (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (table_name, partition_id) REFERENCES partitions (table_name, partition_id) ON DELETE CASCADE
);

-- Among online segments a partition's sequence numbers are unique: tie-breaking relies on it.
CREATE UNIQUE INDEX segments_online_sequence_idx
    ON segments (table_name, partition_id, sequence)
    WHERE state = 'online';
