#!/usr/bin/env bash
# Installs the system packages building and testing mcpgw needs on a fresh Debian machine, when missing:
# cmake (pingora-core → flate2/zlib-ng → libz-ng-sys runs it; STACK.md), python3-venv (the Python MCP
# peers live in a venv), redis-server (tests run their own) and valgrind (the benchmark's instruction-count
# guard, scenario h, runs the proxy under callgrind) and chromium (the console's browser tests drive it
# headless through playwright-core). Uses sudo when not root. Idempotent: installs nothing that is already there.
set -euo pipefail

as_root() { if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v cmake >/dev/null || missing+=(cmake)
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# The global rate-limit tests start a Redis server of their own (on a Unix socket) to stop and restart it.
command -v redis-server >/dev/null || missing+=(redis-server)
command -v callgrind_control >/dev/null || missing+=(valgrind)
command -v chromium >/dev/null || missing+=(chromium)
if [[ ${#missing[@]} -gt 0 ]]; then
  command -v apt-get >/dev/null || {
    echo "system-deps: missing ${missing[*]} and no apt-get here: install them with your package manager" >&2
    exit 1
  }
  echo "system-deps: installing ${missing[*]}" >&2
  as_root apt-get update
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y --no-install-recommends "${missing[@]}"
fi
command -v node >/dev/null || { echo "system-deps: node >= 20 is required (the MCP peers run on it)" >&2; exit 1; }
