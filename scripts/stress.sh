#!/usr/bin/env bash
# Stress run: the whole CI command (.ci/run) N times in a row (default 3) while two busy
# loops keep both cores loaded, stopping at the first failure.
#
#   bash scripts/stress.sh [N]          # N runs (0: start and stop the load, run nothing)
#   bash scripts/stress.sh --dry-run [N]  # print what would run, run nothing
#
# Extra arguments after N go to pytest through .ci/run (e.g. `bash scripts/stress.sh 3 -x`).
# Exit status: 0 when every run passed, else the failing run's status.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
if [[ "${1:-}" == "--dry-run" || "${1:-}" == "-n" ]]; then
  dry_run=1
  shift
fi
runs=${1:-3}
if [[ $# -gt 0 ]]; then
  shift
fi
if ! [[ "$runs" =~ ^[0-9]+$ ]]; then
  echo "usage: bash scripts/stress.sh [--dry-run] [N] [pytest args...]" >&2
  exit 2
fi

busy_loops=2
python=${PYTHON:-python3}
load_pids=()

stop_load() {
  for pid in "${load_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${load_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  load_pids=()
}
trap stop_load EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ $dry_run -eq 1 ]]; then
  echo "would start $busy_loops busy loops: $python -c 'while True: pass'"
  echo "would run $runs time(s): bash .ci/run $*"
  exit 0
fi

for _ in $(seq "$busy_loops"); do
  "$python" -c 'while True: pass' &
  load_pids+=("$!")
done
echo "== stress: $runs run(s) of .ci/run with $busy_loops busy loops (pids ${load_pids[*]:-none})"

durations=()
passed=0
status=0
for run in $(seq "$runs"); do
  echo "== stress run $run/$runs"
  start=$SECONDS
  if bash .ci/run "$@"; then
    durations+=("$((SECONDS - start))s")
    passed=$((passed + 1))
  else
    status=$?
    durations+=("$((SECONDS - start))s (failed, exit $status)")
    break
  fi
done

stop_load
echo "== stress summary: $passed/$runs run(s) passed"
for i in "${!durations[@]}"; do
  echo "   run $((i + 1)): ${durations[$i]}"
done
exit "$status"
