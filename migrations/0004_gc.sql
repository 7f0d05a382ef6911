-- Garbage collection removes catalog rows of segments after their objects are gone. Lineage must
-- not block that: a row's `replaced_by` is cleared when the row it points to is collected.
ALTER TABLE segments DROP CONSTRAINT segments_replaced_by_fkey;
ALTER TABLE segments ADD CONSTRAINT segments_replaced_by_fkey
    FOREIGN KEY (replaced_by) REFERENCES segments (id) ON DELETE SET NULL;

-- Collectable segments by age.
CREATE INDEX segments_retired_idx ON segments (table_name, state_changed_at) WHERE state <> 'online';
