#!/usr/bin/env bash
# Runs a Fovea node with working defaults: QUIC on UDP 0.0.0.0:4433, metrics on
# 127.0.0.1:9090, a self-signed certificate generated in ./fovea-data on first start.
# Extra arguments go to `fovea` (see `tools/node.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec cargo run --release --locked -p fovea-engine --bin fovea -- "$@"
