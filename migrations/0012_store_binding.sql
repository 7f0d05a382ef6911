-- The catalog and its object store belong together (issue 26).
--
-- `catalog_identity` names this catalog once, at migration: the store's marker object records
-- which catalog it belongs to, so a second catalog pointed at the same store is refused before
-- its gc could take the first one's objects for orphans.
CREATE TABLE catalog_identity (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    catalog_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO catalog_identity (catalog_id) VALUES (replace(gen_random_uuid()::text, '-', ''));

-- The store this catalog's objects live in, recorded on its first write (the store keeps the
-- same identity in its marker object, `minion-store.json`, written once). Every command checks
-- its store against this row and refuses another, naming both.
CREATE TABLE store_binding (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    store_id  text NOT NULL,
    store_url text NOT NULL,
    bound_at  timestamptz NOT NULL DEFAULT now()
);
