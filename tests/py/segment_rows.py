"""Reads segments with DuckDB (a Parquet reader nobody here wrote) and compares their rows with the
rows we meant to write.

usage: segment_rows.py TABLE_JSON EXPECTED_JSONL|- SEGMENT.parquet...

Prints `rows=N checksum=HEX` for the segments; with an expected file, exits non-zero unless the
segments hold exactly the expected multiset of rows.
"""
import base64
import collections
import hashlib
import json
import sys

import duckdb


def canonical(value, column_type):
    if value is None:
        return "null"
    if column_type == "bool":
        return "true" if value else "false"
    if column_type == "float64":
        return repr(float(value))
    if column_type == "bytes":
        if isinstance(value, str):  # expected rows carry base64 already
            return value
        return base64.b64encode(bytes(value)).decode()
    return str(value)


def main():
    table = json.load(open(sys.argv[1]))
    expected_path, segments = sys.argv[2], sys.argv[3:]
    columns = [(c["name"], c["type"]) for c in table["columns"]]
    select = ", ".join(
        f'epoch_ms("{name}")' if kind == "timestamp" else f'"{name}"' for name, kind in columns
    )
    files = "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in segments) + "]"
    rows = duckdb.sql(f"SELECT {select} FROM read_parquet({files})").fetchall()
    actual = collections.Counter(
        tuple(canonical(v, kind) for v, (_, kind) in zip(row, columns)) for row in rows
    )
    digest = hashlib.sha256()
    for row in sorted(actual.elements()):
        digest.update(("\x1f".join(row) + "\n").encode())
    print(f"rows={sum(actual.values())} checksum={digest.hexdigest()}")
    if expected_path == "-":
        return
    expected = collections.Counter()
    for line in open(expected_path):
        if line.strip():
            record = json.loads(line)
            expected[tuple(canonical(record.get(name), kind) for name, kind in columns)] += 1
    if actual != expected:
        missing = list((expected - actual).elements())[:5]
        extra = list((actual - expected).elements())[:5]
        sys.exit(f"segments differ from input: missing {missing}, unexpected {extra}")
    print("match")


main()
