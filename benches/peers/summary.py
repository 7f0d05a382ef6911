"""Summarises bench-results/peers.jsonl: median jobs/s per peer and size, minion / best peer."""

import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(list)
versions = {}
pickup = defaultdict(list)
for line in open(sys.argv[1]):
    run = json.loads(line)
    runs[(run["jobs"], run["peer"])].append(run["jobs_per_second"])
    versions[run["peer"]] = run["version"]
    if "pickup_ms_p95" in run:
        pickup[(run["jobs"], run["peer"])].append(run["pickup_ms_p95"])
peers = sorted(versions)
ours = [p for p in peers if p.startswith("minion")]
print("| jobs | " + " | ".join(f"{p} {versions[p]}" for p in peers) + " | "
      + " | ".join(f"{p} / best peer" for p in ours) + " | pickup p95 ms, worst round |")
print("| --- " * (len(peers) + len(ours) + 2) + "|")
for jobs in sorted({jobs for jobs, _ in runs}):
    median = {p: statistics.median(runs[(jobs, p)]) for p in peers if runs[(jobs, p)]}
    best = max(v for p, v in median.items() if p not in ours)
    cells = " | ".join(f"{median[p]:,.0f}" for p in peers)
    ratios = " | ".join(f"{median[p] / best:.2f}x" for p in ours)
    p95 = " / ".join(f"{max(pickup[(jobs, p)]):.1f}" for p in ours)
    print(f"| {jobs:,} | {cells} | {ratios} | {p95} |")
