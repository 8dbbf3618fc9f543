#!/usr/bin/env bash
# Python-module benchmark behind docs/perf.md "## python" (never run by ctest):
# dispatch + combine from Python (switchyard.Buffer) against the same exchange written with
# torch.distributed gloo all_to_all_single, in the same job (python/bench/dispatch_vs_gloo.py).
#
#   bench/python.sh [BUILD_DIR]      (default: build; needs the module: <build>/python/switchyard)
#
# Environment: TOKENS (default 32,256,1024,4096 tokens per rank), RANKS (4), ROUNDS (5),
# CONFIGS (default "1node 2node 2node-flat": 4 ranks on one node; on 2 virtual nodes with the
# two-hop path; on 2 virtual nodes with the flat path), PYTHON (/usr/bin/python3),
# QUIET_IDLE/QUIET_MAX (wait up to QUIET_MAX s for QUIET_IDLE % idle CPUs before each job),
# OUT (raw JSON lines; a temp dir removed unless KEEP=1), MALLOC (default; "fixed": every rank
# runs with MALLOC_MMAP_THRESHOLD_=4 GiB and MALLOC_TRIM_THRESHOLD_=16 GiB, so glibc serves
# both sides' large temporaries from a heap it never trims: no page faults that depend on
# the other side's allocation pattern; the default heuristics let each side's long-lived
# memory change how often the other side's temporaries are mapped and faulted afresh).
# PROFILE=1 (needs perf): afterwards, per config and PROFILE_TOKENS (default "256 4096"), a
# Switchyard-only loop (python/bench/step_loop.py) is sampled with perf and folded into
# where the CPU time goes (python/bench/perf_buckets.py: comm copies/UCX/queues, dispatch's
# own work, page faults, binding, interpreter, waits).
# Inside each job and token count the two sides alternate round by round; the table gives the
# medians over ROUNDS rounds of the step time and of the CPU time per step, the speedup
# (gloo / switchyard), and where Switchyard's step goes (C++ exchange = comm transport, the
# rest of the C++ call = dispatch's own work, binding = tensor conversion in and out).
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "$build/bin" && pwd) || exit 1
pypath=$(cd "$build/python" && pwd) || { echo "no $build/python: the module is not built" >&2; exit 1; }
PYTHON=${PYTHON:-/usr/bin/python3}
TOKENS=${TOKENS:-32,256,1024,4096}
PROFILE_TOKENS=${PROFILE_TOKENS:-"256 4096"}
RANKS=${RANKS:-4}
ROUNDS=${ROUNDS:-5}
CONFIGS=${CONFIGS:-"1node 2node 2node-flat"}
QUIET_IDLE=${QUIET_IDLE:-80}
QUIET_MAX=${QUIET_MAX:-30}
OUT=${OUT:-$(mktemp -d /tmp/sy-python-bench.XXXXXX)}
mkdir -p "$OUT"
trap '[[ ${KEEP:-0} == 1 ]] || rm -rf "$OUT"' EXIT
trap 'exit 130' INT TERM
log() { printf '[python bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cpu_idle_pct() {
  local a b total=0 i
  a=($(head -1 /proc/stat)); sleep 0.5; b=($(head -1 /proc/stat))
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * (b[4] - a[4] + b[5] - a[5]) / total : 100 ))
}
wait_quiet() {
  local start=$SECONDS idle
  while :; do
    idle=$(cpu_idle_pct)
    (( idle >= QUIET_IDLE || SECONDS - start >= QUIET_MAX )) && break
  done
  log "$1: CPUs ${idle}% idle, load $(cut -d' ' -f1-3 /proc/loadavg)"
}

case ${MALLOC:-default} in
  default) ;;
  fixed) export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 ;;
  *) echo "MALLOC must be default or fixed" >&2; exit 2 ;;
esac

for cfg in $CONFIGS; do
  case $cfg in
    1node) nodes=1; extra=() ;;
    2node) nodes=2; extra=() ;;
    2node-flat) nodes=2; extra=(--flat) ;;
    *) echo "unknown config $cfg (1node, 2node, 2node-flat)" >&2; exit 2 ;;
  esac
  wait_quiet "$cfg"
  log "$cfg: $RANKS ranks on $nodes node(s), tokens $TOKENS"
  PYTHONPATH=$pypath OMP_NUM_THREADS=1 UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} \
    "$bin/sy-run" -n "$RANKS" --nodes "$nodes" --timeout 900 --notag-output -- \
    "$PYTHON" "$root/python/bench/dispatch_vs_gloo.py" --tokens "$TOKENS" --rounds "$ROUNDS" --json "${extra[@]}" \
    >"$OUT/$cfg.jsonl" 2>"$OUT/$cfg.err" || { log "$cfg failed:"; tail -20 "$OUT/$cfg.err" >&2; exit 1; }
done

"$PYTHON" - "$OUT" $CONFIGS <<'EOF'
import json, sys
out, configs = sys.argv[1], sys.argv[2:]
print("| nodes | path | T | switchyard us | gloo us | speedup | CPU/step sy us | CPU/step gloo us | CPU ratio "
      "| sy: exchange us | sy: other C++ us | sy: binding us | gloo: a2a us | load |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for cfg in configs:
    for line in open(f"{out}/{cfg}.jsonl"):
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        s, g = d["phases"]["switchyard"], d["phases"]["gloo"]
        path = "two-hop" if d["two_hop"] else ("shm" if d["nodes"] == 1 else "flat")
        print(f"| {d['nodes']} | {path} | {d['tokens']} | {d['switchyard_us']:.0f} | {d['gloo_us']:.0f} | "
              f"**{d['speedup']:.2f}x** | {d['switchyard_cpu_us']:.0f} | {d['gloo_cpu_us']:.0f} | {d['cpu_ratio']:.2f}x | "
              f"{s['cxx_exchange_us']:.0f} | {s['cxx_other_us']:.0f} | {s['convert_in_us'] + s['convert_out_us']:.0f} | "
              f"{g['all_to_all_single_us']:.0f} | {d['loadavg_1m']:.1f} |")
EOF

if [[ ${PROFILE:-0} == 1 ]]; then
  command -v perf >/dev/null || { echo "PROFILE=1 needs perf" >&2; exit 1; }
  for cfg in $CONFIGS; do
    [[ $cfg == 1node ]] && nodes=1 || nodes=2
    [[ $cfg == 2node-flat ]] && extra=(--flat) || extra=()
    for t in $PROFILE_TOKENS; do
      rm -f "$OUT"/ready.*
      PYTHONPATH=$pypath OMP_NUM_THREADS=1 UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} \
        "$bin/sy-run" -n "$RANKS" --nodes "$nodes" --timeout 300 -- "$PYTHON" "$root/python/bench/step_loop.py" \
        --tokens "$t" --seconds 20 --ready "$OUT" "${extra[@]}" >"$OUT/loop.out" 2>&1 &
      loop=$!
      for _ in $(seq 240); do (( $(ls "$OUT"/ready.* 2>/dev/null | wc -l) == RANKS )) && break; sleep 0.5; done
      pids=$(pgrep -d, -P "$loop")  # the ranks (sy-run's children)
      perf record -F 299 --call-graph dwarf,32768 -p "$pids" -o "$OUT/perf.data" -- sleep 8 >/dev/null 2>&1
      wait "$loop"
      echo "CPU profile, $cfg, T=$t (Switchyard step only; load $(cut -d' ' -f1 /proc/loadavg)):"
      perf script -i "$OUT/perf.data" 2>/dev/null | "$PYTHON" "$root/python/bench/perf_buckets.py"
    done
  done
fi

