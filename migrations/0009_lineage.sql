-- Lineage of compacted and merged segments (issue 14): how each output was made, so that a loader
-- can keep the newest snapshot across a swap and map its docIds onto the output exactly. NULL for
-- ingested segments and for outputs written before this migration (the loader then takes the
-- compare path for them). The JSON shape is `catalog::Lineage`; see docs/FORMATS.md.
ALTER TABLE segments ADD COLUMN lineage jsonb;
