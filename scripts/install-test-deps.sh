#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, gcc/g++ and Python 3, which a
# fresh machine has: every package of scripts/test-packages.txt whose command is missing.
# Idempotent. Installing needs root (apt-get); CI and developer machines run as root.
set -euo pipefail
cd "$(dirname "$0")"

need=()
while read -r package command _; do
  case "$package" in ''|'#'*) continue ;; esac
  command -v "$command" >/dev/null 2>&1 || need+=("$package")
done < test-packages.txt

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${need[*]} and not root; install them and retry" >&2
  exit 1
fi
echo "install-test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
