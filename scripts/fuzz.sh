#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer); tests/FUZZING.md says what each target covers.
#
#   scripts/fuzz.sh                   every target for FUZZ_SECONDS (default 20) over a copy of its corpus, then
#                                     its regression inputs once: the CI step. Nothing is written in the repo.
#   scripts/fuzz.sh --long HOURS      the long run: HOURS of wall clock shared by every target (FUZZ_JOBS at a
#                                     time, niced), growing fuzz/corpus/<target>, then minimising it (cmin);
#                                     a table of the figures goes to fuzz/artifacts/long-run.md.
#   scripts/fuzz.sh --target NAME     only that target (repeatable; either mode).
#
# Environment: FUZZ_SECONDS, FUZZ_JOBS (targets run at once, default 2), FUZZ_TARGET_DIR (the build's target
# directory; default $CARGO_TARGET_DIR/fuzz when that is set, else fuzz/target). Exits non-zero on any crash,
# hang or failed invariant, naming the target and the reproducer.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz="$root/fuzz"

log() { echo "fuzz: $*" >&2; }

all_targets=(jsonrpc_inspect session_token sse_proxy sse_control_plane routing_apply jwt_parse api_key_parse
  policy_eval yaml_import header_checks upstream_response client_request)

dict_of() {
  case "$1" in
    jsonrpc_inspect | header_checks) echo "$fuzz/dict/jsonrpc.dict" ;;
    sse_proxy | sse_control_plane) echo "$fuzz/dict/sse.dict" ;;
    jwt_parse | api_key_parse) echo "$fuzz/dict/jwt.dict" ;;
    yaml_import) echo "$fuzz/dict/yaml.dict" ;;
    upstream_response | client_request) echo "$fuzz/dict/http.dict" ;;
    *) echo "" ;;
  esac
}

long_hours=""
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --long) long_hours="${2:?--long needs a number of hours}"; shift 2 ;;
    --target) targets+=("${2:?--target needs a name}"); shift 2 ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")
seconds="${FUZZ_SECONDS:-20}"
jobs="${FUZZ_JOBS:-2}"

if ! rustup toolchain list | grep -q '^nightly'; then
  log "the nightly toolchain is missing (libFuzzer's instrumentation needs it): rustup toolchain install nightly"
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [[ -n "${FUZZ_TARGET_DIR:-}" ]]; then
  target_dir="$FUZZ_TARGET_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  target_dir="$CARGO_TARGET_DIR/fuzz"
else
  target_dir="$fuzz/target"
fi
# Safe Rust only (`unsafe_code = "forbid"` across the workspace): no sanitizer runtime, which builds and runs
# much faster. Overflow checks and debug assertions are on in the project's crates (fuzz/Cargo.toml).
build_flags=(-O --sanitizer none --target-dir "$target_dir")
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/release"

cd "$fuzz"
start=$SECONDS
nice -n 10 cargo +nightly fuzz build "${build_flags[@]}"
log "built ${#all_targets[@]} targets in $((SECONDS - start)) s ($target_dir)"

artifacts="${FUZZ_ARTIFACTS:-$fuzz/artifacts}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Figures of one run from its log: executions, exec/s, corpus size, coverage.
figures() {
  local out="$1" execs rate units cov ft
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -n1)"
  units="$(grep -o 'corp: [0-9]*' "$out" | tail -n1 | cut -d' ' -f2)"
  cov="$(grep -o 'cov: [0-9]*' "$out" | tail -n1 | cut -d' ' -f2)"
  ft="$(grep -o 'ft: [0-9]*' "$out" | tail -n1 | cut -d' ' -f2)"
  echo "${execs:-?} ${rate:-?} ${units:-?} ${cov:-?} ${ft:-?}"
}

# Runs one target for $2 seconds over corpus directory $3 (written to), logging to $4.
fuzz_one() {
  local t="$1" secs="$2" corpus="$3" out="$4" dict
  dict="$(dict_of "$t")"
  local args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$artifacts/$t/")
  [[ -n "$dict" ]] && args+=(-dict="$dict")
  mkdir -p "$artifacts/$t"
  nice -n "${FUZZ_NICE:-10}" "$bin_dir/$t" "${args[@]}" "$corpus" >"$out" 2>&1
}

# Reports a failed run: the target, the reproducer (also as base64, for a CI log), the log's end.
report_failure() {
  local t="$1" out="$2" repro
  repro="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$out" | tail -n1)"
  log "FAILED: $t"
  tail -n 40 "$out" >&2
  if [[ -n "$repro" && -f "$repro" ]]; then
    log "reproducer: $repro (re-run: cd fuzz && cargo +nightly fuzz run ${build_flags[*]:0:3} $t $repro)"
    log "reproducer as base64: $(base64 -w0 "$repro")"
  fi
}

failed=0
pids=()
names=()
outs=()

# Waits for the oldest running target; records a failure.
reap() {
  local pid="${pids[0]}" t="${names[0]}" out="${outs[0]}"
  pids=("${pids[@]:1}"); names=("${names[@]:1}"); outs=("${outs[@]:1}")
  if wait "$pid"; then
    read -r execs rate units cov ft <<<"$(figures "$out")"
    log "$t: ok, $execs runs ($rate/s), corpus $units, cov $cov, ft $ft"
    echo "| $t | $execs | $rate | $units | $cov | $ft | 0 |" >>"$work/table"
  else
    report_failure "$t" "$out"
    read -r execs rate units cov ft <<<"$(figures "$out")"
    echo "| $t | $execs | $rate | $units | $cov | $ft | 1 |" >>"$work/table"
    failed=1
  fi
}

if [[ -n "$long_hours" ]]; then
  # Every target gets an equal share of the wall clock, FUZZ_JOBS at a time.
  waves=$(((${#targets[@]} + jobs - 1) / jobs))
  secs="$(awk -v h="$long_hours" -v w="$waves" 'BEGIN { printf "%d", h * 3600 / w }')"
  export FUZZ_NICE=19
  log "long run: ${#targets[@]} targets, $jobs at a time, $secs s each, started $(date -u '+%F %T') UTC"
else
  secs="$seconds"
fi

for t in "${targets[@]}"; do
  [[ -x "$bin_dir/$t" ]] || { log "no target $t"; exit 2; }
  if [[ -n "$long_hours" ]]; then
    corpus="$fuzz/corpus/$t"
    mkdir -p "$corpus"
  else
    # CI never writes into the repository: the run grows a copy.
    corpus="$work/corpus-$t"
    mkdir -p "$corpus"
    cp -R "$fuzz/corpus/$t/." "$corpus/" 2>/dev/null || true
  fi
  while [[ ${#pids[@]} -ge $jobs ]]; do reap; done
  fuzz_one "$t" "$secs" "$corpus" "$work/$t.log" &
  pids+=("$!"); names+=("$t"); outs+=("$work/$t.log")
done
while [[ ${#pids[@]} -gt 0 ]]; do reap; done

# Inputs that once failed, run once each: the fixes must hold.
for t in "${targets[@]}"; do
  dir="$fuzz/regressions/$t"
  [[ -d "$dir" ]] || continue
  mapfile -t inputs < <(find "$dir" -type f | sort)
  [[ ${#inputs[@]} -gt 0 ]] || continue
  if "$bin_dir/$t" -timeout=10 "${inputs[@]}" >"$work/$t.regressions.log" 2>&1; then
    log "$t: ${#inputs[@]} regression inputs pass"
  else
    report_failure "$t" "$work/$t.regressions.log"
    failed=1
  fi
done

if [[ -n "$long_hours" ]]; then
  mkdir -p "$artifacts"
  {
    echo "Long run finished $(date -u '+%F %T') UTC: $secs s per target, $jobs at a time."
    echo
    echo "| target | executions | exec/s | corpus | cov | ft | crashed |"
    echo "|---|---|---|---|---|---|---|"
    cat "$work/table"
  } >"$artifacts/long-run.md"
  cat "$artifacts/long-run.md"
  for t in "${targets[@]}"; do
    before="$(find "$fuzz/corpus/$t" -type f | wc -l)"
    nice -n 10 cargo +nightly fuzz cmin "${build_flags[@]}" "$t" "$fuzz/corpus/$t" >"$work/$t.cmin.log" 2>&1 ||
      log "$t: cmin failed (see $work/$t.cmin.log)"
    log "$t: corpus $before -> $(find "$fuzz/corpus/$t" -type f | wc -l) files, $(du -sh "$fuzz/corpus/$t" | cut -f1)"
  done
fi

if [[ "$failed" -ne 0 ]]; then
  log "fuzzing found failures (reproducers above)"
  exit 1
fi
log "every target passed"
