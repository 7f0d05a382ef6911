"""Summarises bench-results/peers.jsonl: median jobs/s per peer and size, minion / best peer."""

import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(list)
versions = {}
for line in open(sys.argv[1]):
    run = json.loads(line)
    runs[(run["jobs"], run["peer"])].append(run["jobs_per_second"])
    versions[run["peer"]] = run["version"]
peers = sorted(versions)
print("| jobs | " + " | ".join(f"{p} {versions[p]}" for p in peers) + " | minion / best peer |")
print("| --- " * (len(peers) + 2) + "|")
for jobs in sorted({jobs for jobs, _ in runs}):
    median = {p: statistics.median(runs[(jobs, p)]) for p in peers if runs[(jobs, p)]}
    best = max(v for p, v in median.items() if p != "minion")
    cells = " | ".join(f"{median[p]:,.0f}" for p in peers)
    print(f"| {jobs:,} | {cells} | {median['minion'] / best:.2f}x |")
