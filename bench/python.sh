#!/usr/bin/env bash
# Python-module benchmark behind docs/perf.md "## python" (never run by ctest):
# dispatch + combine from Python (switchyard.Buffer) against the same exchange written with
# torch.distributed gloo all_to_all_single (python/bench/dispatch_vs_gloo.py).
#
#   bench/python.sh [BUILD_DIR]      (default: build; needs the module: <build>/python/switchyard)
#
# MODE=isolated (default): each round runs the Switchyard side in one `sy-run` job and the
# gloo side in another (fresh processes, same tensors, seeds, T, H, experts; the job order
# flips every round), so neither side's retained memory changes the other's allocations and
# page faults; each job saves its results and compares them with the other side's from the
# round's earlier job (the script fails unless every T was cross-checked). The table gives
# the medians over ROUNDS rounds (one timed round of steps per job and T).
# MODE=shared: both sides in the same processes, alternating round by round inside one job
# per config (the layout of session 3 and 4's tables).
# Environment: TOKENS (default 32,256,1024,4096 tokens per rank), RANKS (4), ROUNDS (5),
# CONFIGS (default "1node 2node 2node-flat": 4 ranks on one node; on 2 virtual nodes with the
# two-hop path; on 2 virtual nodes with the flat path), PYTHON (/usr/bin/python3),
# QUIET_IDLE/QUIET_MAX (wait up to QUIET_MAX s for QUIET_IDLE % idle CPUs before each job),
# OUT (raw JSON lines; a temp dir removed unless KEEP=1), MALLOC (default; "fixed": every rank
# runs with MALLOC_MMAP_THRESHOLD_=4 GiB and MALLOC_TRIM_THRESHOLD_=16 GiB, so glibc serves
# large temporaries from a heap it never trims; with the default heuristics gloo + torch map
# and fault their large per-step temporaries afresh, thousands of minor faults per step even
# in their own processes, and in MODE=shared each side's long-lived memory also changes how
# often the other side's are).
# PROFILE=1 (needs perf): afterwards, per config and PROFILE_TOKENS (default "256 4096"), a
# Switchyard-only loop (python/bench/step_loop.py) is sampled with perf and folded into
# where the CPU time goes (python/bench/perf_buckets.py: comm copies/UCX/queues, dispatch's
# own work, page faults, binding, interpreter, waits).
# The table gives the medians over ROUNDS rounds of the step time and of the CPU time per
# step, the speedup (gloo / switchyard), and where Switchyard's step goes (C++ exchange = comm transport, the
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

source "$(dirname "$0")/quiet.sh"  # cpu_idle_pct, wait_for_idle
wait_quiet() { log "$1: CPUs $(wait_for_idle) idle, load $(cut -d' ' -f1-3 /proc/loadavg)"; }

case ${MALLOC:-default} in
  default) ;;
  fixed) export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 ;;
  *) echo "MALLOC must be default or fixed" >&2; exit 2 ;;
esac
MODE=${MODE:-isolated}
[[ $MODE == isolated || $MODE == shared ]] || { echo "MODE must be isolated or shared" >&2; exit 2; }
log "mode $MODE, malloc ${MALLOC:-default}, $RANKS ranks, rounds $ROUNDS"

# One job of python/bench/dispatch_vs_gloo.py on the config's nodes; appends its JSON lines.
bench_job() {  # cfg side(both|switchyard|gloo) jsonl [extra args...]
  local cfg=$1 side=$2 jsonl=$3 nodes=1 extra=()
  shift 3
  [[ $cfg == 1node ]] || nodes=2
  [[ $cfg == 2node-flat ]] && extra=(--flat)
  PYTHONPATH=$pypath OMP_NUM_THREADS=1 UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} \
    "$bin/sy-run" -n "$RANKS" --nodes "$nodes" --timeout 900 --notag-output -- \
    "$PYTHON" "$root/python/bench/dispatch_vs_gloo.py" --tokens "$TOKENS" --json --side "$side" "${extra[@]}" "$@" \
    >>"$jsonl" 2>"$OUT/$cfg.err" || { log "$cfg $side failed:"; tail -20 "$OUT/$cfg.err" >&2; exit 1; }
}

for cfg in $CONFIGS; do
  case $cfg in
    1node) nodes=1 ;;
    2node|2node-flat) nodes=2 ;;
    *) echo "unknown config $cfg (1node, 2node, 2node-flat)" >&2; exit 2 ;;
  esac
  rm -f "$OUT/$cfg.jsonl"
  if [[ $MODE == shared ]]; then
    wait_quiet "$cfg"
    log "$cfg: $RANKS ranks on $nodes node(s), tokens $TOKENS, both sides in each process"
    bench_job "$cfg" both "$OUT/$cfg.jsonl" --rounds "$ROUNDS"
    continue
  fi
  mkdir -p "$OUT/check.$cfg" && rm -f "$OUT/check.$cfg"/*.pt
  for (( r = 0; r < ROUNDS; r++ )); do
    (( r % 2 == 0 )) && order="switchyard gloo" || order="gloo switchyard"
    for side in $order; do
      wait_quiet "$cfg round $r $side"
      bench_job "$cfg" "$side" "$OUT/$cfg.jsonl" --rounds 1 --check-dir "$OUT/check.$cfg"
    done
  done
  rm -rf "$OUT/check.$cfg"
done

"$PYTHON" - "$OUT" "$MODE" $CONFIGS <<'EOF'
import json, statistics, sys
out, mode, configs = sys.argv[1], sys.argv[2], sys.argv[3:]
med = statistics.median


def records(cfg):
    for line in open(f"{out}/{cfg}.jsonl"):
        if line.strip().startswith("{"):
            yield json.loads(line)


def isolated_rows(cfg):
    """Per T: medians over the rounds (one job per side and round) of each side's numbers."""
    by_t = {}
    for d in records(cfg):
        by_t.setdefault(d["tokens"], {"switchyard": [], "gloo": []})[d["side"]].append(d)
    for t, sides in sorted(by_t.items()):
        s, g = sides["switchyard"], sides["gloo"]
        # Every job but the very first found the other side's results of the job before it.
        if not s or not g or sum(d["checked"] for d in s + g) < len(s) + len(g) - 1:
            sys.exit(f"{cfg} T={t}: a side is missing or a job was not cross-checked")
        sy_us, gl_us = med(d["step_us"] for d in s), med(d["step_us"] for d in g)
        sy_cpu, gl_cpu = med(d["cpu_us"] for d in s), med(d["cpu_us"] for d in g)
        ph = lambda ds, side, f: med(d["phases"][side][f] for d in ds)
        yield dict(two_hop=s[0]["two_hop"], nodes=s[0]["nodes"], tokens=t, switchyard_us=sy_us, gloo_us=gl_us,
                   speedup=gl_us / sy_us, switchyard_cpu_us=sy_cpu, gloo_cpu_us=gl_cpu, cpu_ratio=gl_cpu / sy_cpu,
                   loadavg_1m=statistics.mean(d["loadavg_1m"] for d in s + g),
                   max_abs_diff=max(d["max_abs_diff"] for d in s + g),
                   phases=dict(switchyard={f: ph(s, "switchyard", f) for f in
                                           ("cxx_exchange_us", "cxx_other_us", "convert_in_us", "convert_out_us")},
                               gloo={"all_to_all_single_us": ph(g, "gloo", "all_to_all_single_us")}))


print("| nodes | path | T | switchyard us | gloo us | speedup | CPU/step sy us | CPU/step gloo us | CPU ratio "
      "| sy: exchange us | sy: other C++ us | sy: binding us | gloo: a2a us | load |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for cfg in configs:
    for d in (isolated_rows(cfg) if mode == "isolated" else records(cfg)):
        s, g = d["phases"]["switchyard"], d["phases"]["gloo"]
        path = "two-hop" if d["two_hop"] else ("shm" if d["nodes"] == 1 else "flat")
        print(f"| {d['nodes']} | {path} | {d['tokens']} | {d['switchyard_us']:.0f} | {d['gloo_us']:.0f} | "
              f"**{d['speedup']:.2f}x** | {d['switchyard_cpu_us']:.0f} | {d['gloo_cpu_us']:.0f} | {d['cpu_ratio']:.2f}x | "
              f"{s['cxx_exchange_us']:.0f} | {s['cxx_other_us']:.0f} | {s['convert_in_us'] + s['convert_out_us']:.0f} | "
              f"{g['all_to_all_single_us']:.0f} | {d['loadavg_1m']:.1f} |")
if mode == "isolated":
    print("\nisolated: one sy-run job per side and round, job order flipped every round; every T cross-checked "
          "(allclose 1e-4) between the sides' results in every round")
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

