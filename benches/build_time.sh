#!/bin/bash
# Cold and warm release builds of the benchmarker (lean and default features) and of the CLI,
# one after the other, each in a fresh target dir; run it on a quiet machine: bash benches/build_time.sh
set -u
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
run() { # name, target dir, args...
  local name=$1 dir=$2; shift 2
  rm -rf "$dir"
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  local t0; t0=$(date +%s.%N)
  CARGO_TARGET_DIR=$dir cargo build --release "$@" >"/tmp/bt-$name.log" 2>&1 || { echo "$name FAILED"; tail -5 /tmp/bt-$name.log; }
  local t1; t1=$(date +%s.%N)
  local crates; crates=$(grep -c "Compiling" "/tmp/bt-$name.log")
  touch autodebug-core/src/lib.rs
  local w0; w0=$(date +%s.%N)
  CARGO_TARGET_DIR=$dir cargo build --release "$@" >"/tmp/bt-$name-warm.log" 2>&1
  local w1; w1=$(date +%s.%N)
  printf "%s cold %.0f s warm %.0f s crates %s load-at-start %s\n" "$name" "$(echo "$t1-$t0" | bc)" "$(echo "$w1-$w0" | bc)" "$crates" "$load"
}
date -u
run bench-lean /tmp/bt-lean -p autodebug-bench --no-default-features
run bench-default /tmp/bt-bench -p autodebug-bench
run cli /tmp/bt-cli -p autodebug-cli
date -u
