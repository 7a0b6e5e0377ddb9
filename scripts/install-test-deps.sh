#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, gcc/g++ and Python 3, which a
# fresh machine has. Idempotent: installs only what is missing. Needs root (apt-get) for the
# packages; skipped with a warning where they are already present.
set -euo pipefail

need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: missing ${need[*]} and not root; install them and retry" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
