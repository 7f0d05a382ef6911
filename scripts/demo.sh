#!/usr/bin/env bash
# Runs `minion demo` end to end: with DATABASE_URL unset, a throwaway Postgres under ./.minion,
# and the object store in ./minion-data (override with MINION_STORE). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --quiet --bin minion
exec target/debug/minion demo "$@"
