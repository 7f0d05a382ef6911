"""The DuckDB baseline of `minion bench prebuild`: the same winner computation over the same
Parquet files: per key, the row with the largest (comparison, file, row), where files are given
in segment-sequence order, and whether that winner is a tombstone. Timed inside DuckDB's own
process, so interpreter start-up is not counted.

The winners must be *used*: a query that only counts groups lets DuckDB's optimizer drop the
arg_max altogether and measure key grouping alone (which is what this script did before
2026-11-21; that figure is still printed as `group_only_seconds`, a lower bound).

The ordering key is packed into one HUGEINT (comparison * 2^40 + file * 2^32 + row): of the exact
formulations tried, the fastest by 1.3x over a struct-valued arg_max and 3x over arg_max per field.

usage: duckdb_baseline.py KEY_COLUMN COMPARISON_COLUMN DELETE_COLUMN FILE...
prints: {"seconds": S, "keys": N, "queryable": Q, "group_only_seconds": G}
"""
import json
import sys
import time

import duckdb

key, comparison, delete, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
con = duckdb.connect()
con.execute("PRAGMA disable_progress_bar")

kind = con.execute(
    f"SELECT column_type FROM (DESCRIBE SELECT \"{comparison}\" FROM read_parquet('{files[0]}'))"
).fetchone()[0]
value = f'epoch_ms("{comparison}")' if kind.startswith("TIMESTAMP") else f'"{comparison}"'
union = " UNION ALL ".join(
    f"""SELECT "{key}" AS k, "{delete}" AS d,
               {value}::HUGEINT * 1099511627776 + {index} * 4294967296 + file_row_number AS o
        FROM read_parquet('{path}', file_row_number = true)"""
    for index, path in enumerate(files)
)

started = time.perf_counter()
keys, queryable, _ = con.execute(
    f"""SELECT count(*), count(*) FILTER (WHERE NOT winner_deleted), sum(winner % 1000000007)
        FROM (SELECT k, max(o) AS winner, arg_max(d, o) AS winner_deleted FROM ({union}) GROUP BY k)"""
).fetchone()
seconds = time.perf_counter() - started

listed = "[" + ", ".join("'" + f + "'" for f in files) + "]"
started = time.perf_counter()
con.execute(f'SELECT count(*) FROM (SELECT "{key}" FROM read_parquet({listed}) GROUP BY 1)').fetchone()
group_only = time.perf_counter() - started

print(json.dumps({"seconds": seconds, "keys": keys, "queryable": queryable, "group_only_seconds": group_only}))
