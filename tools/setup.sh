#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build Fovea: BoringSSL (through quiche's
# `boring` crate) needs cmake, clang and libclang. Idempotent: installs nothing when present.
set -euo pipefail
need=()
for p in cmake clang libclang-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing ${need[*]} (needed to build BoringSSL)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
