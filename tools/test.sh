#!/usr/bin/env bash
# Runs Fovea's whole test suite (unit, property, end-to-end over real QUIC on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cargo test --workspace --locked "$@"
