#!/usr/bin/env bash
# Diagnosis of the F&B overlap on a machine with spare cores (issue 6, target (c)): where the
# communication that overlapped pairs fail to hide goes, per rank and per phase
# (sy-overlap-perf --phases; pipeline/fb_overlap_report.h). Prints to stdout; < 90 s on 16 cores.
#
#   bench/overlap_diag.sh [BUILD_DIR]        RANKS_LIST="4 8" HIDDEN_LIST="16 64 128" REPS=9
#
# 1. The CPU topology (which logical CPUs share a physical core: a compute thread and a
#    communication thread on two hyperthreads of one core slow each other down).
# 2. Per rank count and hidden size, two placements: "pairs" (compute 2r, comm 2r+1, as
#    bench/overlap_16core.sh) and "none" (no pinning: the scheduler may move a rank off a
#    slow or busy CPU). The first run (2026-11-26, 16-core device, no hyperthreads) also
#    tried "split" (compute r, comm n+r): no better than "pairs".
set -uo pipefail
build=${1:-build}
bin=$(cd "$build/bin" && pwd)
RANKS_LIST=${RANKS_LIST:-"4 8"}
HIDDEN_LIST=${HIDDEN_LIST:-"16 64 128"}
TOKENS=${TOKENS:-1024}
REPS=${REPS:-9}
export OPENBLAS_NUM_THREADS=1
cpus=$(nproc)
echo "overlap_diag.sh: $cpus CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
lscpu 2>/dev/null | grep -E '^(Thread|Core|Socket|NUMA|Model name|CPU MHz|L2|L3)' || true
for c in $(seq 0 $((cpus - 1))); do
  t=/sys/devices/system/cpu/cpu$c/topology
  printf 'cpu%-3d core %-3s package %-2s siblings %s\n' "$c" "$(cat $t/core_id 2>/dev/null)" \
    "$(cat $t/physical_package_id 2>/dev/null)" "$(cat $t/thread_siblings_list 2>/dev/null)"
done
for n in $RANKS_LIST; do
  ((2 * n > cpus)) && { echo "skip $n ranks: needs $((2 * n)) CPUs"; continue; }
  for h in $HIDDEN_LIST; do
    for place in pairs none; do
      case $place in
        pairs) flags="--compute_cpus $(seq -s, 0 2 $((2 * n - 1))) --comm_cpus $(seq -s, 1 2 $((2 * n - 1)))" ;;
        split) flags="--compute_cpus $(seq -s, 0 $((n - 1))) --comm_cpus $(seq -s, $n $((2 * n - 1)))" ;;
        none) flags="" ;;
      esac
      echo "=== ranks $n hidden $h tokens $TOKENS placement $place ($flags)"
      timeout 60 "$bin/sy-run" -n "$n" -- "$bin/sy-overlap-perf" --tokens "$TOKENS" --hidden "$h" \
        --experts $((2 * n)) --top_k 2 --reps "$REPS" --phases $flags 2>&1 | sed -n 's/^\[0\] //p' ||
        echo "run failed"
    done
  done
done
echo "overlap_diag.sh: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
