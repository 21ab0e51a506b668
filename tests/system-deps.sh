#!/usr/bin/env bash
# Debian packages the test suite needs beyond Python: rabbitmq-server (the integration and chaos
# tiers start a private node from its binaries) and chromium (browser-marked tests).
# As root with apt-get: installs what is missing. Otherwise: says what is missing and exits 0,
# so `make test` still runs (those tests then use Docker through testcontainers, or skip).
# Usage: tests/system-deps.sh [extra-package ...]   (.ci/run passes make and python3-venv if needed)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/sbin:/sbin"

wanted=(rabbitmq-server chromium "$@")
# Azurite (Azure Storage's emulator, from npm) serves the wasbs:// and abfss:// tests; npm brings it.
if ! command -v azurite-blob >/dev/null && ! command -v npm >/dev/null; then wanted+=(npm); fi
missing=()
for pkg in "${wanted[@]}"; do
  if ! command -v dpkg-query >/dev/null \
     || [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)" != "installed" ]; then
    missing+=("$pkg")
  fi
done
install_azurite() {
  command -v azurite-blob >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v npm >/dev/null; then
    echo "test setup: not installed: azurite (install with: sudo npm install -g azurite)" >&2
    return 0
  fi
  echo "test setup: installing azurite (npm)"
  npm install -g --no-fund --no-audit --loglevel=error azurite@3 </dev/null
  command -v azurite-blob >/dev/null || { echo "test setup: azurite-blob is not on PATH after npm install" >&2; exit 1; }
}

if [ "${#missing[@]}" -eq 0 ]; then
  install_azurite
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "test setup: not installed: ${missing[*]} (install as root with: sudo make system-deps)" >&2
  exit 0
fi

echo "test setup: installing ${missing[*]}"
# Keep package scripts from starting the system RabbitMQ: the tests run their own node, and a
# system one would hold the default ports. 101 = "action not allowed" (policy-rc.d).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update
apt-get install -y --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null
for tool in rabbitmq-server rabbitmqctl chromium; do
  command -v "$tool" >/dev/null || { echo "test setup: $tool is not on PATH after installing its package" >&2; exit 1; }
done
install_azurite
