"""Writes a JSON Lines file as Parquet with pyarrow, types inferred by pyarrow itself (int64 for
integers, so loading it exercises the casts to the table's int32/timestamp columns).

usage: jsonl_to_parquet.py IN.jsonl OUT.parquet
"""
import sys

import pyarrow.json
import pyarrow.parquet

table = pyarrow.json.read_json(sys.argv[1])
pyarrow.parquet.write_table(table, sys.argv[2])
print(table.num_rows)
