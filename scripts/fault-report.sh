#!/usr/bin/env bash
# Prints the fault-injection suite's table (tests/e2e/faults.rs writes one row per scenario under
# <target>/fault-report/ when it passes). Run after the tests: `scripts/test.sh && scripts/fault-report.sh`.
# Fails when no scenario reported (the suite did not run).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${CARGO_TARGET_DIR:-$root/target}/fault-report"
shopt -s nullglob
rows=("$dir"/*.md)
if [[ ${#rows[@]} -eq 0 ]]; then
  echo "fault-report: no rows in $dir (run the tests first)" >&2
  exit 1
fi
echo "| scenario | promise | calls | failed | lost audit records | recovery | measured |"
echo "|---|---|---|---|---|---|---|"
cat "${rows[@]}"
