#!/usr/bin/env bash
# The test command: installs the system packages and the real MCP peers the end-to-end tests talk to, builds every binary of the
# workspace (the e2e tests run them as processes), then runs every test. Extra arguments go to the test
# runner, e.g. `scripts/test.sh -E 'test(passthrough)'` with nextest or `scripts/test.sh passthrough` without.
# Needs PostgreSQL on 127.0.0.1:5432 (trust, user postgres); `.ci/run` makes sure of that first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -n "${CI:-}" ]]; then
  # Incremental artifacts only cost time and space on a one-shot build.
  export CARGO_INCREMENTAL=0
fi

# System packages the build and the tests need (cmake, python3-venv, redis-server); installs only what is missing.
scripts/system-deps.sh
tests/peers/install.sh
cargo build --workspace --bins

# Rows of the fault-injection suite are written afresh by this run (scripts/fault-report.sh prints them).
rm -rf "${CARGO_TARGET_DIR:-$root/target}/fault-report"

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
  # nextest does not run doctests.
  cargo test --workspace --doc || status=$?
else
  cargo test --workspace --no-fail-fast -- "$@" || status=$?
fi
exit "$status"
