"""The DuckDB baseline of `minion bench prebuild`: the same winner computation (latest version per
key by comparison value, ties by file and row) over the same Parquet files, timed inside DuckDB's
own process so interpreter start-up is not counted.

usage: duckdb_baseline.py KEY_COLUMN COMPARISON_COLUMN FILE...
prints: {"seconds": S, "keys": N}
"""
import json
import sys
import time

import duckdb

key, comparison, files = sys.argv[1], sys.argv[2], sys.argv[3:]
listed = "[" + ", ".join("'" + f + "'" for f in files) + "]"
con = duckdb.connect()
started = time.perf_counter()
keys = con.execute(
    f"""SELECT count(*) FROM (
          SELECT "{key}", arg_max((filename, file_row_number), ("{comparison}", filename, file_row_number))
          FROM read_parquet({listed}, filename = true, file_row_number = true)
          GROUP BY "{key}")"""
).fetchone()[0]
print(json.dumps({"seconds": time.perf_counter() - started, "keys": keys}))
