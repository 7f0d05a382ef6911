"""Computes upsert winners with DuckDB (arg_max per key over the same Parquet files) as an
independent check of prebuild.

usage: duckdb_winners.py TABLE_JSON SEGMENTS_JSON

SEGMENTS_JSON lists {"id", "sequence", "path"}. Prints JSON {"valid": {id: [docIds]},
"queryable": {id: [docIds]}}: the winner of each key by (comparison, sequence, docId); a winning
tombstone is valid but not queryable. TTLs are not applied (tests use data that no TTL touches).
"""
import json
import sys

import duckdb

table = json.load(open(sys.argv[1]))
segments = json.load(open(sys.argv[2]))
keys = ", ".join(f'"{k}"' for k in table["primary_key"])
comparison = f'"{table["comparison"]}"'
delete = f'"{table["delete_column"]}"' if table.get("delete_column") else "false"

con = duckdb.connect()
con.execute("CREATE TABLE seg (path VARCHAR, id BIGINT, seq BIGINT)")
con.executemany("INSERT INTO seg VALUES (?, ?, ?)", [(s["path"], s["id"], s["sequence"]) for s in segments])
files = "[" + ", ".join("'" + s["path"] + "'" for s in segments) + "]"
rows = con.execute(
    f"""
    WITH r AS (
        SELECT {keys}, {comparison} AS cmp, {delete} AS del, file_row_number AS doc, filename
        FROM read_parquet({files}, filename = true, file_row_number = true)
    ), ranked AS (
        SELECT seg.id, r.doc, r.del,
               row_number() OVER (PARTITION BY {keys} ORDER BY r.cmp DESC, seg.seq DESC, r.doc DESC) AS rank
        FROM r JOIN seg ON seg.path = r.filename
    )
    SELECT id, doc, del FROM ranked WHERE rank = 1
    """
).fetchall()
valid, queryable = {}, {}
for segment_id, doc, deleted in rows:
    valid.setdefault(str(segment_id), []).append(int(doc))
    if not deleted:
        queryable.setdefault(str(segment_id), []).append(int(doc))
for bitmaps in (valid, queryable):
    for docs in bitmaps.values():
        docs.sort()
print(json.dumps({"valid": valid, "queryable": queryable}))
