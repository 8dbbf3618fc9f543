#!/usr/bin/env bash
# comm benchmarks behind docs/perf.md "## comm" (run by `make bench`, never by ctest).
#
#   bench/comm.sh [BUILD_DIR]          RUNS=5 SECTIONS="latency onenode ucx ucxlat" by default
#
# latency: 8-byte all_to_all with 1, 2 and 4 ranks on one node vs MPI_Alltoall in the same
#          mpirun job (-n 2000, 5 samples per job, ours and MPI alternating), blocking form,
#          the async form (iall_to_all().wait()) and the op path (SWITCHYARD_COMM_INLINE=0)
#          as separate jobs interleaved within each run: the per-call cost breakdown.
# onenode: all_to_all with 2 and 4 ranks on one node, Switchyard vs Open MPI's MPI_Alltoall
#          in the same mpirun job (sy-a2a-perf --baseline mpi: per size the two alternate),
#          all_reduce float32 sum at 1 and 64 MiB vs MPI_Allreduce the same way,
#          and the two-process memcpy rate (256 MiB, glibc, one process pinned per core)
#          measured between the runs as the copy-rate reference.
# ucx:     two virtual nodes on one machine over UCX tcp (UCX_NET_DEVICES=lo): sy-a2a-perf
#          p2p (rank 0 -> rank 1) and a 2-rank all_to_all, each run interleaved with
#          `ucx_perftest -t tag_bw` one way at the same message sizes.
# ucxlat:  small messages between virtual nodes: 1 KiB per peer all_to_all with 4 ranks on 2
#          virtual nodes (shm inside, UCX tcp between) and 1 KiB p2p with 2 ranks, each run
#          interleaved with `ucx_perftest -t tag_lat` (1 KiB, half round trip), and the 4-rank
#          all_to_all once more under the wait policy of before the fix (knobs) in the same run.
# Every section repeats RUNS times; the summary prints medians over the runs (and the
# min/max), with ratios computed per run. Raw JSON stays in $OUT (default: a temp dir
# that is removed unless KEEP=1).
set -uo pipefail
build=${1:-build}
bin=$(cd "$build/bin" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-5}
SECTIONS=${SECTIONS:-"latency onenode ucx ucxlat"}
OUT=${OUT:-$(mktemp -d /tmp/sy-comm-bench.XXXXXX)}
mkdir -p "$OUT"
bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  [[ ${KEEP:-0} == 1 ]] || rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[comm bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
has() { [[ " $SECTIONS " == *" $1 "* ]]; }

gcc -O2 -o "$OUT/memcpy_rate" "$here/comm/memcpy_rate.c" || exit 1
perf=(-n 3 -w 2 --min_ms 30 --repeat 1 -c 1 --json)

OUT_DIR=$OUT memcpy_rate=$OUT/memcpy_rate
source "$here/comm/common.sh"  # memcpy_pair, tag_bw, tag_lat, wait_quiet

# The machine is shared: before each measurement wait (up to QUIET_MAX s) until the CPUs are
# at least QUIET_IDLE % idle over half a second; the idle % seen goes to $OUT/idle.log.
QUIET_IDLE=${QUIET_IDLE:-85}
QUIET_MAX=${QUIET_MAX:-60}
if has latency; then
  lat=(-n 2000 -w 100 --min_ms 0 --repeat 5 -c 1 --json --baseline mpi)
  for ((r = 1; r <= RUNS; r++)); do
    log "latency run $r/$RUNS"
    for np in 1 2 4; do
      over=(); (( np > 2 )) && over=(--oversubscribe)
      b=$(( 8 * np ))
      for mode in blocking async op; do
        env_mode=(); args=()
        [[ $mode == async ]] && args=(--async)
        [[ $mode == op ]] && env_mode=(-x SWITCHYARD_COMM_INLINE=0)
        wait_quiet "lat.np$np.$mode.$r"
        mpirun --allow-run-as-root "${over[@]}" "${env_mode[@]}" -np "$np" "$bin/sy-a2a-perf" --op all_to_all \
          -b "$b" -e "$b" "${lat[@]}" "${args[@]}" >"$OUT/lat.np$np.$mode.$r.json" 2>"$OUT/lat.np$np.$mode.$r.err" ||
          log "latency np=$np $mode failed: $(tail -3 "$OUT/lat.np$np.$mode.$r.err")"
      done
    done
  done
fi

if has onenode; then
  for ((r = 1; r <= RUNS; r++)); do
    log "onenode run $r/$RUNS"
    wait_quiet "memcpy.$r"; memcpy_pair 268435456 >"$OUT/memcpy.$r"
    wait_quiet "np2.$r"
    mpirun --allow-run-as-root -np 2 "$bin/sy-a2a-perf" --op all_to_all --baseline mpi -b 16 -e 32M "${perf[@]}" \
      >"$OUT/a2a.np2.$r.json" 2>"$OUT/a2a.np2.$r.err" || log "np=2 run failed: $(tail -3 "$OUT/a2a.np2.$r.err")"
    wait_quiet "np4.$r"
    mpirun --allow-run-as-root --oversubscribe -np 4 "$bin/sy-a2a-perf" --op all_to_all --baseline mpi -b 32 -e 64M \
      "${perf[@]}" >"$OUT/a2a.np4.$r.json" 2>"$OUT/a2a.np4.$r.err" || log "np=4 run failed: $(tail -3 "$OUT/a2a.np4.$r.err")"
    for np in 2 4; do
      wait_quiet "allreduce.np$np.$r"
      mpirun --allow-run-as-root --oversubscribe -np "$np" "$bin/sy-a2a-perf" --op all_reduce --baseline mpi -b 1M \
        -e 64M -f 64 "${perf[@]}" >"$OUT/ar.np$np.$r.json" 2>"$OUT/ar.np$np.$r.err" || log "all_reduce np=$np failed"
    done
  done
fi

if has ucx; then
  for ((r = 1; r <= RUNS; r++)); do
    log "ucx run $r/$RUNS"
    for s in 1048576 4194304 16777216; do
      wait_quiet "tag_bw.$s.$r"; tag_bw "$s" $(( s >= 16777216 ? 100 : 400 )) >"$OUT/tag_bw.$s.$r"
    done
    # 300 ms untimed first: a fresh UCX tcp connection runs at about half rate for ~250 ms.
    wait_quiet "p2p.$r"
    UCX_NET_DEVICES=lo "$bin/sy-run" -n 2 --nodes 2 --timeout 300 --notag_output -- "$bin/sy-a2a-perf" --op p2p \
      -b 1M -e 16M -f 4 --warmup_ms 300 "${perf[@]}" >"$OUT/p2p.$r.json" 2>"$OUT/p2p.$r.err" || log "p2p run failed"
    # The two-way reference of the 2-rank all_to_all (two tag_bw pairs at once, ~1 s per stream).
    for s in 1048576 4194304 16777216; do
      wait_quiet "tag_bw2.$s.$r"; tag_bw_two_way "$s" $(( (1 << 31) / s )) >"$OUT/tag_bw2.$s.$r"
    done
    wait_quiet "a2a.vn2.$r"
    UCX_NET_DEVICES=lo "$bin/sy-run" -n 2 --nodes 2 --timeout 300 --notag_output -- "$bin/sy-a2a-perf" --op all_to_all \
      -b 2M -e 32M -f 4 --warmup_ms 300 "${perf[@]}" >"$OUT/a2a.vn2.$r.json" 2>"$OUT/a2a.vn2.$r.err" ||
      log "2-node a2a run failed"
  done
fi

if has ucxlat; then
  small=(-n 200 -w 20 --min_ms 0 --repeat 5 -c 1 --json)
  for ((r = 1; r <= RUNS; r++)); do
    log "ucxlat run $r/$RUNS"
    wait_quiet "tag_lat.$r"; tag_lat >"$OUT/tag_lat.$r" 2>"$OUT/tag_lat_avg.$r"
    wait_quiet "ucxlat.a2a.$r"
    UCX_NET_DEVICES=lo "$bin/sy-run" -n 4 --nodes 2 --timeout 120 --notag_output -- "$bin/sy-a2a-perf" \
      --op all_to_all -b 4K -e 4K "${small[@]}" >"$OUT/ucxlat.a2a.$r.json" 2>"$OUT/ucxlat.a2a.$r.err" ||
      log "ucxlat a2a failed"
    # The wait policy before the host count (spin 2000, 50 yields), for before/after in one run.
    wait_quiet "ucxlat.a2a_old.$r"
    UCX_NET_DEVICES=lo SWITCHYARD_COMM_SPIN_ITERS_OVERSUBSCRIBED=2000 SWITCHYARD_COMM_YIELD_ITERS_OVERSUBSCRIBED=50 \
      "$bin/sy-run" -n 4 --nodes 2 --timeout 120 --notag_output -- "$bin/sy-a2a-perf" --op all_to_all -b 4K -e 4K \
      "${small[@]}" >"$OUT/ucxlat.a2a_old.$r.json" 2>"$OUT/ucxlat.a2a_old.$r.err" || log "ucxlat a2a (old policy) failed"
    wait_quiet "ucxlat.p2p.$r"
    UCX_NET_DEVICES=lo "$bin/sy-run" -n 2 --nodes 2 --timeout 120 --notag_output -- "$bin/sy-a2a-perf" \
      --op p2p -b 1K -e 1K "${small[@]}" >"$OUT/ucxlat.p2p.$r.json" 2>"$OUT/ucxlat.p2p.$r.err" ||
      log "ucxlat p2p failed"
  done
fi

echo "conditions: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), Open MPI $(ompi_info --version 2>/dev/null | awk '/Open MPI/{print $3; exit}'), UCX $(ucx_info -v | awk '/Version/{print $3; exit}')"
echo "CPU idle before each measurement (QUIET_IDLE=$QUIET_IDLE%, waited up to ${QUIET_MAX}s):"
sed 's/^/  /' "$OUT/idle.log"
/usr/bin/python3 "$here/comm/summarize.py" "$OUT" "$RUNS"
