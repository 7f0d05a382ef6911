"""Reads a snapshot's files with programs nobody here wrote: every bitmap with pyroaring (CRoaring)
and every SST with RocksDB's own sst_dump. Exits non-zero on any disagreement with the manifest.
A layered snapshot's files overlap: the keys of all layers together must be the manifest's keys.

usage: check_snapshot_files.py STORE_DIR MANIFEST_JSON_PATH
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pyroaring

store, manifest_path = sys.argv[1], sys.argv[2]
manifest = json.load(open(manifest_path))
bitmaps = 0
for segment in manifest["segments"]:
    for name, count in (("valid", segment["valid_docs"]), ("queryable", segment["queryable_docs"])):
        data = open(os.path.join(store, segment[name]["key"]), "rb").read()
        bitmap = pyroaring.BitMap.deserialize(data)
        if len(bitmap) != count:
            sys.exit(f"{segment[name]['key']}: pyroaring counts {len(bitmap)}, manifest says {count}")
        if len(bitmap) and bitmap.max() >= segment["rows"]:
            sys.exit(f"{segment[name]['key']}: docId {bitmap.max()} beyond {segment['rows']} rows")
        bitmaps += 1
entries = 0
keys = set()
for key_file in manifest["key_files"]:
    work = tempfile.mkdtemp()
    local = os.path.join(work, "f.sst")
    shutil.copy(os.path.join(store, key_file["key"]), local)
    out = subprocess.run(["sst_dump", f"--file={local}", "--command=scan", "--output_hex"],
                         capture_output=True, text=True)
    text = out.stdout + out.stderr
    # sst_dump exits 0 even when it rejects a file: read what it says.
    if "Corrupt" in text or "unsupported" in text.lower() or "error" in text.lower():
        sys.exit(f"sst_dump rejected {key_file['key']}: {text[:500]}")
    lines = [l for l in out.stdout.splitlines() if "=>" in l]
    if len(lines) != key_file["entries"]:
        sys.exit(f"{key_file['key']}: sst_dump scanned {len(lines)} entries, manifest says {key_file['entries']}")
    for line in lines:
        value = line.split("=>")[1].strip()
        if not re.fullmatch(r"(0x)?[0-9A-Fa-f]{42}", value):
            sys.exit(f"{key_file['key']}: value {value} is not a 21-byte record")
        keys.add(line.split("=>")[0].strip())
    entries += len(lines)
    shutil.rmtree(work)
if len(keys) != manifest["key_count"]:
    sys.exit(f"the key files hold {len(keys)} distinct keys, manifest says {manifest['key_count']}")
print(f"ok bitmaps={bitmaps} sst_entries={entries} keys={len(keys)}")
