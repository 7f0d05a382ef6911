#!/usr/bin/env bash
# Builds the release binary exactly as the Dockerfile's builder stage does (tests/it/deploy.rs
# checks that the two commands agree): target/release/minion.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin minion
