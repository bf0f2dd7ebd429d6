#!/usr/bin/env bash
# The benchmark harness (BENCHMARKS.md). Builds release binaries (proxy, control plane, bench crate),
# installs nginx from Debian when missing (the reference reverse proxy), gives the control plane a
# throw-away database on the local PostgreSQL (dropped at the end), raises the open-file limit, and runs
# `mcpgw-bench run` pinned to CPU 0 while it pins the fixture, the proxy (--threads 1) and nginx to CPU 1.
#
#   scripts/bench.sh                 # full run: scenarios a–g, m, s and t, 5 interleaved passes; ~12 min after the build
#   scripts/bench.sh --smoke         # seconds, debug binaries, tiny counts, no thresholds (CI)
#   scripts/bench.sh --scenarios ab  # any `mcpgw-bench run` option passes through (see --help)
#   scripts/bench.sh --scenarios t --proxy-bin DIR/mcpgw-proxy   # another proxy build, same harness
#   scripts/bench.sh --scenarios h --nginx none   # instructions per request under callgrind, held to
#                                                 # bench/instructions.json (+20 % fails; what CI runs)
#
# Any error in any run (no answer, a non-2xx answer, a JSON-RPC error) fails the run, smoke included:
# the exit status is non-zero after the reports are written, and they name each run with errors.
#
# Reports: target/bench-report/report.{md,json} (smoke: target/bench-report/smoke/), logs beside them.
# Environment: MCPGW_BENCH_PG (default postgres://postgres@127.0.0.1:5432), CARGO_TARGET_DIR,
# MCPGW_BENCH_H_ARGS (flags added to the proxy scenario h measures, e.g. "--otlp-endpoint http://127.0.0.1:1").
# A run with it is compared with bench/instructions.json all the same: read its figure, not its verdict.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

smoke=""
out=""
nginx_bin=""
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) out="$2"; shift ;;
    --out=*) out="${1#--out=}" ;;
    --nginx) nginx_bin="$2"; shift ;;
    --nginx=*) nginx_bin="${1#--nginx=}" ;;
    *) args+=("$1") ;;
  esac
  shift
done

log() { echo "bench: $*" >&2; }
as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

target_dir="${CARGO_TARGET_DIR:-$root/target}"
if [[ -n "$smoke" ]]; then
  profile=debug
  out="${out:-$target_dir/bench-report/smoke}"
  cargo_profile=()
else
  profile=release
  out="${out:-$target_dir/bench-report}"
  cargo_profile=(--release)
fi
bin_dir="$target_dir/$profile"

# The reference reverse proxy (`--nginx none`: without it).
nginx_bin="${nginx_bin:-$(command -v nginx || echo /usr/sbin/nginx)}"
if [[ "$nginx_bin" != none && ! -x "$nginx_bin" ]]; then
  log "installing nginx from Debian (nginx-light)"
  install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light >/dev/null; }
  if install 2>/dev/null || { as_root apt-get update >/dev/null 2>&1 && install; }; then
    nginx_bin=/usr/sbin/nginx
  else
    log "cannot install nginx (no root): running without the nginx reference"
    nginx_bin=none
  fi
fi

if [[ -n "${CI:-}" ]]; then
  # As scripts/test.sh: the same setting reuses the binaries it just built.
  export CARGO_INCREMENTAL=0
fi
log "building $profile binaries"
cargo build "${cargo_profile[@]}" -p mcpgw-proxy -p mcpgw-control-plane -p mcpgw-bench --bins

# Idle streams (scenario f) need two descriptors per stream in the proxy.
hard="$(ulimit -Hn)"
if [[ "$hard" == unlimited ]]; then ulimit -n 65536; else ulimit -n "$hard"; fi
log "open-file limit $(ulimit -n)"

pg="${MCPGW_BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
db="mcpgw_bench_$$_$(date +%s)"
mkdir -p "$out/logs"

cleanup() {
  local status=$?
  if [[ -f "$out/logs/pids" ]]; then
    while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done <"$out/logs/pids"
  fi
  if command -v psql >/dev/null; then
    psql "$pg/postgres" -qXc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 \
      || log "could not drop database $db"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pin=()
if [[ "$(nproc --all)" -ge 2 ]]; then
  pin=(taskset -c 0)
  cpus=(--load-cpu 0 --server-cpu 1)
else
  log "one CPU: no pinning"
  cpus=(--load-cpu none --server-cpu none)
fi
smoke_flag=()
[[ -n "$smoke" ]] && smoke_flag=(--smoke)

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
export MCPGW_BENCH_COMMIT="$commit"
export MCPGW_BENCH_COMMAND="scripts/bench.sh${smoke:+ --smoke}${args[*]:+ ${args[*]}}"

log "running (reports in $out)"
"${pin[@]}" "$bin_dir/mcpgw-bench" run "${smoke_flag[@]}" "${cpus[@]}" \
  --bin-dir "$bin_dir" --nginx "$nginx_bin" --out "$out" --database-url "$pg/$db" "${args[@]}"
