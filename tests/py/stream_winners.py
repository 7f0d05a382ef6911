"""The winners of an upsert stream computed by DuckDB straight from the JSON Lines that were
ingested, as an independent model: per key, the row with the largest comparison value, ties going
to the later row of the stream (column `n`, the row's position in the stream).

usage: stream_winners.py KEY COMPARISON ORDER STREAM.jsonl...

Prints the winners' ORDER values, one per line, ascending.
"""
import sys

import duckdb

key, comparison, order = sys.argv[1:4]
files = "[" + ", ".join("'" + path + "'" for path in sys.argv[4:]) + "]"
rows = duckdb.connect().execute(
    f"""
    SELECT arg_max("{order}", ("{comparison}", "{order}")) AS winner
    FROM read_json({files}, format = 'newline_delimited')
    GROUP BY "{key}"
    ORDER BY winner
    """
).fetchall()
for (winner,) in rows:
    print(winner)
