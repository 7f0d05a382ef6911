#!/usr/bin/env bash
# Queue throughput against peers (issue 15): graphile-worker (npm) and pgqueuer (PyPI), installed
# into a scratch directory, each burning down the same pre-inserted no-op jobs on a database of its
# own with 2 worker processes at concurrency 50, interleaved with `minion bench queue` (same
# Postgres). Prints jobs/s per peer and size (median over the rounds) and minion's ratio to the
# best peer; every run is a JSON line in bench-results/peers.jsonl. minion runs twice: with
# `--prefetch 500` per worker (graphile-worker's `localQueue.size` below) and with no prefetch.
#
#   benches/peers/run.sh                 # ROUNDS=2 SIZES="20000 50000" by default
#   ADMIN_URL=postgres://... MINION=target/release/minion benches/peers/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
admin=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
base=${admin%/*}
scratch=${SCRATCH:-$root/target/peers}
rounds=${ROUNDS:-2}
sizes=${SIZES:-"20000 50000"}
prefetch=${PREFETCH:-500}
minion=${MINION:-$root/target/debug/minion}
mkdir -p "$scratch" bench-results

if [ ! -d "$scratch/gw/node_modules/graphile-worker" ]; then
  mkdir -p "$scratch/gw"
  (cd "$scratch/gw" && npm init -y >/dev/null && npm install --silent graphile-worker@0.18.0)
fi
if [ ! -x "$scratch/pq/bin/python" ]; then
  python3 -m venv "$scratch/pq"
  "$scratch/pq/bin/pip" install -q pgqueuer==1.6.0 asyncpg==0.32.0
fi

fresh() { psql -q "$admin" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null; }
out=bench-results/peers.jsonl
: >"$out"
for round in $(seq "$rounds"); do
  for n in $sizes; do
    echo "round $round, $n jobs" >&2
    # minion twice: with a prefetch as large as graphile-worker's local queue (like for like),
    # and with its default (no prefetch: one claim per batch of free slots).
    for each in "$prefetch" 0; do
      fresh peer_minion
      "$minion" --database-url "$base/peer_minion" migrate >/dev/null
      "$minion" --database-url "$base/peer_minion" bench queue --jobs "$n" --workers 2 \
        --concurrency 50 --prefetch "$each" --latency-jobs 200 \
        --output "$scratch/minion.json" >/dev/null 2>&1
      python3 -c 'import json, sys; f = json.load(open(sys.argv[1])); p = int(sys.argv[3]); print(json.dumps({"peer": "minion" if p else "minion (no prefetch)", "version": sys.argv[2], "prefetch": p, "jobs": f["jobs"], "seconds": f["burn_down_seconds"], "jobs_per_second": f["jobs_per_second"], "pickup_ms_p95": f["pickup_ms_p95"]}))' \
        "$scratch/minion.json" "$("$minion" --version | awk '{print $2}')" "$each" >>"$out"
    done
    fresh peer_gw
    NODE_PATH="$scratch/gw/node_modules" node benches/peers/graphile.js "$base/peer_gw" "$n" 2 50 >>"$out"
    fresh peer_pq
    "$scratch/pq/bin/python" benches/peers/pgqueuer_peer.py "$base/peer_pq" "$n" 2 50 >>"$out"
  done
done
python3 benches/peers/summary.py "$out"
