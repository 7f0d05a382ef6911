"""The DuckDB baseline of `minion bench compact`: rewrite each segment to the rows whose docIds
(row positions) are listed, in their original order, as zstd Parquet with 128Ki-row groups,
timed inside DuckDB's own process so interpreter start-up and loading the lists are not counted.

usage: duckdb_rewrite.py PLAN_JSON
PLAN_JSON lists {"input", "docs", "output"}; docs is a text file of docIds, one per line.
prints: {"seconds": S, "rows": N, "bytes": B}
"""
import json
import os
import sys
import time

import duckdb

plan = json.load(open(sys.argv[1]))
con = duckdb.connect()
for index, case in enumerate(plan):
    con.execute(
        f"CREATE TABLE docs_{index} AS SELECT * FROM read_csv('{case['docs']}', header = false, columns = {{'doc': 'BIGINT'}})"
    )
started = time.perf_counter()
for index, case in enumerate(plan):
    con.execute(
        f"""COPY (
              SELECT * EXCLUDE (file_row_number)
              FROM read_parquet('{case['input']}', file_row_number = true)
              SEMI JOIN docs_{index} ON file_row_number = doc
              ORDER BY file_row_number
            ) TO '{case['output']}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 131072)"""
    )
seconds = time.perf_counter() - started
rows = sum(
    con.execute(f"SELECT count(*) FROM read_parquet('{case['output']}')").fetchone()[0] for case in plan
)
size = sum(os.path.getsize(case["output"]) for case in plan)
print(json.dumps({"seconds": seconds, "rows": rows, "bytes": size}))
