#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against real Postgres (DATABASE_URL, or the
# embedded dev cluster when unset) and a real S3 server (moto_server, started here).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >target-moto.log 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; rm -f target-moto.log' EXIT
for _ in $(seq 1 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
  sleep 0.1
done
export MINION_TEST_S3_ENDPOINT="http://127.0.0.1:$port"

cargo build --quiet --all-targets
cargo test --all-targets -- "$@"
