#!/usr/bin/env bash
# comm bandwidth targets of issue #4 on a quiet machine, in under 2 minutes (the GPU machine's
# step "bench-comm-quiet" of scripts/gpu-check.sh; also runs on any build dir here).
#
#   bench/comm_quiet.sh [BUILD_DIR]       BUILD_DIR: a build dir or a scripts/gpu-bundle.sh bundle
#
# Needs only BUILD_DIR/bin and BUILD_DIR/lib (the bundle): sy-run, sy-a2a-perf, memcpy_rate
# (bench/comm/memcpy_rate.c, compiled into the bundle; compiled here with cc if missing) and
# ucx_perftest (the bundle's, else the one on PATH; the UCX section is skipped without it).
# No Open MPI: the MPI-relative targets are bench/comm.sh's. python3 prints the summary.
#
# Each run r (RUNS=5 by default) measures, in this order, interleaved:
#   memcpy pair  two glibc memcpy processes pinned to two cores at once, summed GB/s (256 MiB
#                buffers, the reference of the target; and 8 MiB, the all_to_all's buffer)
#   one node     sy-a2a-perf all_to_all, 2 ranks (1-16 MiB per peer) and 4 ranks (1-16 MiB)
#   tag_bw       ucx_perftest -t tag_bw one way over tcp on lo at 1, 4, 16 MiB
#   two nodes    (each after 300 ms of untimed calls: --warmup_ms)
#                sy-a2a-perf p2p (rank 0 -> 1, one message in flight); the two-way reference
#                (two tag_bw pairs at once, one stream each way, at 1, 4, 16 MiB: the rate
#                of the slower stream); a 2-rank all_to_all, one rank on each of 2 virtual
#                nodes (UCX tcp on lo between them); p2p once more with the RMA put
#                path forced (SWITCHYARD_COMM_UCX_RMA=1; information, no target)
# The summary (bench/comm/summarize.py) takes every ratio within one run, then the median
# over runs, and prints each target with "met"/"NOT met". The all_to_all per direction is
# compared with one-way tag_bw (the issue's 40 %) and with the two-way reference
# (../shared/benchmarking.md: both directions share the cores; read as 80 %, the p2p bar). Runs stop early when the time
# budget (BUDGET_S, default 105 s) would be exceeded by another run; the summary says how
# many ran. Raw JSON stays in $OUT_DIR (default: a temp dir, kept when KEEP=1).
set -uo pipefail
build=${1:-build}
build=$(cd "$build" && pwd) || exit 1
bin=$build/bin
here=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-5}
BUDGET_S=${BUDGET_S:-105}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/sy-comm-quiet.XXXXXX)}
mkdir -p "$OUT_DIR"
export LD_LIBRARY_PATH=$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[[ -z ${UCX_MODULE_DIR:-} && -d $build/lib/ucx ]] && export UCX_MODULE_DIR=$build/lib/ucx
t0=$SECONDS
bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  [[ ${KEEP:-0} == 1 ]] || rm -rf "$OUT_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[comm quiet %3ds] %s\n' "$(( SECONDS - t0 ))" "$*" >&2; }

for p in sy-run sy-a2a-perf; do
  [[ -x $bin/$p ]] || { echo "comm_quiet: $bin/$p missing" >&2; exit 1; }
done
# The copy-rate tool: the bundle's memcpy_rate, else compiled here, else the same loop in
# numpy (np.copyto of contiguous arrays is one memcpy; the per-call overhead is < 1% at 8 MiB).
memcpy_rate=$bin/memcpy_rate
memcpy_tool="glibc memcpy (bundle memcpy_rate)"
if [[ ! -x $memcpy_rate ]]; then
  memcpy_rate=$OUT_DIR/memcpy_rate
  memcpy_tool="glibc memcpy (memcpy_rate compiled here)"
  cc=$(command -v cc || command -v gcc || true)
  if [[ -z $cc ]] || ! "$cc" -O2 -o "$memcpy_rate" "$here/comm/memcpy_rate.c"; then
    python3 -c 'import numpy' 2>/dev/null ||
      { echo "comm_quiet: no $bin/memcpy_rate, no C compiler and no numpy for the memcpy baseline" >&2; exit 1; }
    memcpy_tool="numpy copyto (no memcpy_rate in the bundle, no C compiler)"
    cat >"$memcpy_rate" <<'PY'
#!/usr/bin/env python3
# memcpy_rate BYTES SECONDS [START_REALTIME_NS], as bench/comm/memcpy_rate.c.
import sys, time
import numpy as np
n, dur = int(sys.argv[1]), float(sys.argv[2])
src = np.full(n, 7, np.uint8); dst = np.zeros(n, np.uint8); np.copyto(dst, src)
if len(sys.argv) > 3:
    while time.time_ns() < int(sys.argv[3]): time.sleep(1e-4)
copies, t0 = 0, time.perf_counter()
while True:
    np.copyto(dst, src); copies += 1
    t = time.perf_counter()
    if t - t0 >= dur: break
print(n, "%.3f" % (n * copies / (t - t0) / 1e9))
PY
    chmod +x "$memcpy_rate"
  fi
fi
perftest=$bin/ucx_perftest
[[ -x $perftest ]] || perftest=$(command -v ucx_perftest || true)
if [[ -z $perftest ]]; then
  log "no ucx_perftest (bundle bin/ or PATH): the UCX section is skipped"
elif ldd "$perftest" | grep -q 'libgomp.so.1 => not found'; then
  # The bundle may lack ucx_perftest's OpenMP runtime: borrow a libgomp that ships with
  # Python packages (torch wheels carry one under another file name).
  gomp=$(timeout 10 find /usr/lib /lib /usr/local /opt -name 'libgomp*.so*' -type f 2>/dev/null | head -1)
  if [[ -n $gomp ]]; then
    mkdir -p "$OUT_DIR/gomp" && ln -sf "$gomp" "$OUT_DIR/gomp/libgomp.so.1"
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$OUT_DIR/gomp
    log "ucx_perftest: libgomp.so.1 taken from $gomp"
  fi
fi
if [[ -n $perftest ]] && ldd "$perftest" | grep -q 'not found'; then
  log "ucx_perftest cannot load: $(ldd "$perftest" | grep 'not found' | tr -s ' \t' ' ')" \
    "(the bundle must pack its libraries); the UCX section is skipped"
  perftest=
fi

# Two cores of the same socket, not the first (where interrupts land), for the memcpy pair.
cores=($(taskset -pc $$ | sed 's/.*: //' | tr ',' '\n' | while IFS=- read -r a b; do seq "$a" "${b:-$a}"; done))
if (( ${#cores[@]} >= 4 )); then c0=${cores[2]}; c1=${cores[3]}; else c0=${cores[0]}; c1=${cores[1]:-${cores[0]}}; fi

memcpy_secs=0.4
# On a shared machine: QUIET_MAX=S waits up to S s before each measurement for QUIET_IDLE %
# idle CPUs (default 0: no wait; the idle % and load seen go to the summary either way).
QUIET_IDLE=${QUIET_IDLE:-85}
QUIET_MAX=${QUIET_MAX:-0}
source "$here/comm/common.sh"  # memcpy_pair, tag_bw, wait_quiet

perf=(-n 3 -w 2 --min_ms 30 --repeat 1 -c 1 --json)
# Between virtual nodes: 300 ms of untimed calls first. A fresh UCX tcp connection runs at
# about half rate for its first ~250 ms (p2p 1 MiB: 350-650 us per message, then 180-220 us;
# docs/perf.md "## comm", 2026-11-26 15:05), which otherwise falls on the first size.
warm=(--warmup_ms 300)
# a2a NAME RANKS NODES ARGS...: one sy-a2a-perf job under sy-run, JSON to $OUT_DIR/NAME.json.
a2a() {
  local name=$1 np=$2 nodes=$3
  shift 3
  UCX_NET_DEVICES=lo "$bin/sy-run" -n "$np" --nodes "$nodes" --timeout 40 --notag_output -- "$bin/sy-a2a-perf" \
    "$@" "${perf[@]}" >"$OUT_DIR/$name.json" 2>"$OUT_DIR/$name.err" ||
    log "$name failed: $(tail -3 "$OUT_DIR/$name.err")"
}

runs_done=0
run_s=0
# The conditions and the tables of the runs finished so far (also when stopped by a signal,
# e.g. the caller's timeout).
summary() {
  echo "conditions: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(ldd --version | head -1)," \
    "memcpy pair on cores $c0,$c1 with $memcpy_tool, UCX_TLS=tcp on lo, $runs_done runs in $(( SECONDS - t0 )) s"
  echo "before each measurement (QUIET_IDLE=$QUIET_IDLE%, waited up to ${QUIET_MAX}s; idle n/a: not sampled):"
  sed 's/^/  /' "$OUT_DIR/idle.log" 2>/dev/null
  (( runs_done > 0 )) || { echo "comm_quiet: no run finished"; return 1; }
  command -v python3 >/dev/null || { echo "comm_quiet: no python3 for the summary; raw results in $OUT_DIR" >&2; KEEP=1; return 1; }
  python3 "$here/comm/summarize.py" "$OUT_DIR" "$runs_done" "onenode ucx targets"
}
trap 'log "stopped by a signal during run $(( runs_done + 1 ))"; summary; exit 143' INT TERM
for ((r = 1; r <= RUNS; r++)); do
  if (( runs_done > 0 && SECONDS - t0 + run_s > BUDGET_S )); then
    log "stopping after $runs_done runs (time budget ${BUDGET_S}s; one run takes ${run_s}s)"
    break
  fi
  rs=$SECONDS
  log "run $r/$RUNS (load $(cut -d' ' -f1-3 /proc/loadavg))"
  wait_quiet "memcpy.$r"; memcpy_pair 268435456 >"$OUT_DIR/memcpy.$r"
  wait_quiet "memcpy8m.$r"; memcpy_pair 8388608 >"$OUT_DIR/memcpy8m.$r"
  wait_quiet "a2a.np2.$r"; a2a "a2a.np2.$r" 2 1 --op all_to_all -b 2M -e 32M -f 4
  wait_quiet "a2a.np4.$r"; a2a "a2a.np4.$r" 4 1 --op all_to_all -b 4M -e 64M -f 4
  if [[ -n $perftest ]]; then
    for s in 1048576 4194304 16777216; do
      wait_quiet "tag_bw.$s.$r"; tag_bw "$s" $(( s >= 16777216 ? 60 : 300 )) >"$OUT_DIR/tag_bw.$s.$r"
    done
    wait_quiet "p2p.$r"; a2a "p2p.$r" 2 2 --op p2p -b 1M -e 16M -f 4 "${warm[@]}"
    # The two-way reference of the 2-rank all_to_all: two tag_bw pairs at once, one each way.
    for s in 1048576 4194304 16777216; do
      # About 1 s per stream, so the two streams overlap although their processes start apart.
      wait_quiet "tag_bw2.$s.$r"; tag_bw_two_way "$s" $(( (1 << 31) / s )) >"$OUT_DIR/tag_bw2.$s.$r"
    done
    wait_quiet "a2a.vn2.$r"; a2a "a2a.vn2.$r" 2 2 --op all_to_all -b 2M -e 32M -f 4 "${warm[@]}"
    # The RMA put path forced over tcp (where UCX emulates puts; auto keeps tagged messages).
    wait_quiet "p2prma.$r"; SWITCHYARD_COMM_UCX_RMA=1 a2a "p2prma.$r" 2 2 --op p2p -b 1M -e 16M -f 4 "${warm[@]}"
  fi
  runs_done=$r
  run_s=$(( SECONDS - rs ))
done

summary
