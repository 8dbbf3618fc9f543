#!/usr/bin/env bash
# dispatch benchmarks behind docs/perf.md "## dispatch": the whole target set of issue #5 in
# one command (never run by ctest), so it can be rerun as is on a quiet machine.
#
#   bench/dispatch.sh [BUILD_DIR]        RUNS=5 TOKENS=4096 LL_TOKENS=128 NAIVE=0
#                                        SECTIONS="2x2 ll" by default
#
# Each run (RUNS of them, every one a fresh set of processes):
#   2x2: sy-dispatch-perf on 2 virtual nodes x 2 ranks, UCX tcp between the nodes
#        (UCX_NET_DEVICES=lo), T = TOKENS, H 7168, top-8 of 256: checks against both flat
#        references, then FP8/BF16 dispatch and BF16 combine of the Buffer (two-hop) and of
#        the rank-deduplicated reference (and the naive one with NAIVE=1: it is always
#        checked, but timing it doubles the run), medians of 5 timed calls each.
#        Targets: (FP8 dispatch + BF16 combine) >= 1.3x faster than rank-dedup; FP8
#        dispatch <= 0.6x BF16 dispatch; wire bytes == prediction.
#   ll:  sy-dispatch-perf --low_latency on 1 node x 2 ranks, LL_TOKENS tokens x H 7168, FP8
#        cast inside dispatch, beside one memcpy of the same bytes (the delivered (token,
#        expert) rows) in the same process, medians of 5. Target: <= 2x the memcpy.
# The comm heartbeat timeout is raised to HEARTBEAT_MS (120 s) so that a rank starved of CPU
# on an overloaded machine is not declared hung (its default of 10 s was hit at load 25).
# Before each measurement it waits (up to QUIET_MAX s) until the CPUs are QUIET_IDLE % idle
# and logs the idle share and load average it saw. The summary prints each run's ratios,
# their medians over the runs and min/max, and whether each target is met at the median.
# Raw JSON stays in $OUT (default: a temp dir removed unless KEEP=1).
set -uo pipefail
build=${1:-build}
bin=$(cd "$build/bin" && pwd) || exit 1
RUNS=${RUNS:-5}
TOKENS=${TOKENS:-4096}
LL_TOKENS=${LL_TOKENS:-128}
NAIVE=${NAIVE:-0}
SECTIONS=${SECTIONS:-"2x2 ll"}
export SWITCHYARD_COMM_HEARTBEAT_TIMEOUT_MS=${HEARTBEAT_MS:-120000}
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
QUIET_IDLE=${QUIET_IDLE:-85}
QUIET_MAX=${QUIET_MAX:-60}
OUT=${OUT:-$(mktemp -d /tmp/sy-dispatch-bench.XXXXXX)}
mkdir -p "$OUT"
cleanup() { [[ ${KEEP:-0} == 1 ]] || rm -rf "$OUT"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[dispatch bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

source "$(dirname "$0")/quiet.sh"  # cpu_idle_pct, wait_for_idle
wait_quiet() { echo "$1 idle=$(wait_for_idle) load=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/idle.log"; }

# One line per finished run (so that a run cut short by a time limit still leaves numbers).
run_line() {
  /usr/bin/python3 - "$OUT" "$1" <<'EOF_LINE'
import json, os, sys
out, r = sys.argv[1], sys.argv[2]
def load(name):
    try:
        t = open(os.path.join(out, name)).read()
        return json.loads(t[t.index("{"):])
    except (OSError, ValueError):
        return None
a, b = load(f"2x2.{r}.json"), load(f"ll.{r}.json")
parts = []
if a:
    parts.append("2x2 speedup vs rank-dedup %.2fx, fp8/bf16 %.2f, checks %s" %
                 (a["speedup_vs_rank_dedup"], a["fp8_over_bf16_dispatch"], "ok" if a["checks_passed"] else "FAIL"))
if b:
    parts.append("low-latency / memcpy %.2fx" % b["low_latency_over_memcpy"])
print(f"[dispatch bench] run {r}: " + ("; ".join(parts) if parts else "no results"), flush=True)
EOF_LINE
}

for ((r = 1; r <= RUNS; r++)); do
  if has 2x2; then
    log "run $r/$RUNS: 2 virtual nodes x 2 ranks, T $TOKENS"
    wait_quiet "2x2.$r"
    UCX_NET_DEVICES=lo "$bin/sy-run" -n 4 --nodes 2 --timeout 900 --notag_output -- "$bin/sy-dispatch-perf" \
      --tokens "$TOKENS" --time_naive=$([[ $NAIVE == 1 ]] && echo true || echo false) --json >"$OUT/2x2.$r.json" 2>"$OUT/2x2.$r.err" ||
      log "2x2 run $r failed: $(tail -3 "$OUT/2x2.$r.err")"
    echo "2x2.$r after load=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/idle.log"
  fi
  if has ll; then
    log "run $r/$RUNS: low-latency, 1 node x 2 ranks, $LL_TOKENS tokens"
    wait_quiet "ll.$r"
    "$bin/sy-run" -n 2 --timeout 300 --notag_output -- "$bin/sy-dispatch-perf" --tokens "$LL_TOKENS" \
      --low_latency --ll_tokens "$LL_TOKENS" --json >"$OUT/ll.$r.json" 2>"$OUT/ll.$r.err" ||
      log "ll run $r failed: $(tail -3 "$OUT/ll.$r.err")"
    echo "ll.$r after load=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/idle.log"
  fi
  run_line "$r"
done

echo "conditions: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), UCX $(ucx_info -v 2>/dev/null | awk '/Version/{print $3; exit}'), git $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null)"
echo "CPU idle before each measurement (QUIET_IDLE=$QUIET_IDLE%, waited up to ${QUIET_MAX}s) and load after:"
sed 's/^/  /' "$OUT/idle.log"
SECTIONS="$SECTIONS" /usr/bin/python3 - "$OUT" "$RUNS" <<'EOF'
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])

def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            text = f.read()
        return json.loads(text[text.index("{"):])
    except (OSError, ValueError):
        return None

def ms(rep, impl, op, dtype, key="median_us"):
    for r in rep["rows"]:
        if r["impl"] == impl and r["op"] == op and r["dtype"] == dtype:
            return r[key] / 1e3
    return float("nan")

cols = ["speedup_vs_dedup", "fp8_over_bf16", "wire_exact", "ll_over_memcpy", "ll_ms", "memcpy_ms", "checks"]
table = []
for r in range(1, runs + 1):
    a, b = load(f"2x2.{r}.json"), load(f"ll.{r}.json")
    row = {"run": r}
    if a:
        row["speedup_vs_dedup"] = a["speedup_vs_rank_dedup"]
        row["fp8_over_bf16"] = a["fp8_over_bf16_dispatch"]
        row["wire_exact"] = a["wire_bytes_measured"] == a["wire_bytes_predicted"]
        row["buffer_ms"] = (ms(a, "buffer", "dispatch", "fp8"), ms(a, "buffer", "dispatch", "bf16"),
                            ms(a, "buffer", "combine", "bf16"))
        row["dedup_ms"] = (ms(a, "rank-dedup", "dispatch", "fp8"), ms(a, "rank-dedup", "dispatch", "bf16"),
                           ms(a, "rank-dedup", "combine", "bf16"))
    if b:
        row["ll_over_memcpy"] = b["low_latency_over_memcpy"]
        row["ll_ms"] = ms(b, "low-latency", "dispatch", "fp8")
        row["memcpy_ms"] = ms(b, "memcpy", "same bytes", "fp8")
        row["ll_combine_ms"] = ms(b, "low-latency", "combine", "bf16")
        # Fastest of the timed calls of each, for the cost without scheduling delays.
        row["ll_min_over_memcpy_min"] = (ms(b, "low-latency", "dispatch", "fp8", "min_us") /
                                         ms(b, "memcpy", "same bytes", "fp8", "min_us"))
    # A section that was not run (SECTIONS) does not count; a run that failed does.
    ran = [x for x, sec in ((a, "2x2"), (b, "ll")) if sec in os.environ.get("SECTIONS", "2x2 ll").split()]
    row["checks"] = all(x is not None and x["checks_passed"] for x in ran)
    table.append(row)

print("run  2x2: buffer fp8/bf16 dispatch, combine ms | rank-dedup fp8/bf16/combine ms | speedup  fp8/bf16 | "
      "LL dispatch ms  memcpy ms  ratio  LL combine ms | checks")
for row in table:
    f = lambda k, fmt: (fmt % row[k]) if k in row else "-"
    bm = "/".join("%.1f" % v for v in row["buffer_ms"]) if "buffer_ms" in row else "-"
    dm = "/".join("%.1f" % v for v in row["dedup_ms"]) if "dedup_ms" in row else "-"
    print(f"{row['run']:>3}  {bm:>28} | {dm:>30} | {f('speedup_vs_dedup', '%.2fx'):>7}  {f('fp8_over_bf16', '%.2f'):>8} | "
          f"{f('ll_ms', '%.3f'):>14}  {f('memcpy_ms', '%.3f'):>9}  {f('ll_over_memcpy', '%.2fx'):>6}  "
          f"{f('ll_combine_ms', '%.3f'):>13} | {'ok' if row['checks'] else 'FAIL'}")

def summary(key, target, better_low, what):
    vals = [row[key] for row in table if key in row]
    if not vals:
        print(f"{what}: no data")
        return
    med = statistics.median(vals)
    met = med <= target if better_low else med >= target
    print(f"{what}: median {med:.2f} over {len(vals)} runs (min {min(vals):.2f}, max {max(vals):.2f}); "
          f"target {'<=' if better_low else '>='} {target}: {'MET' if met else 'not met'} at the median")

summary("speedup_vs_dedup", 1.3, False, "2x2 FP8 dispatch + BF16 combine vs rank-dedup (x)")
summary("fp8_over_bf16", 0.6, True, "2x2 FP8 / BF16 dispatch time")
summary("ll_over_memcpy", 2.0, True, "low-latency FP8 dispatch / memcpy of the same bytes")
vals = [row["ll_min_over_memcpy_min"] for row in table if "ll_min_over_memcpy_min" in row]
if vals:
    print(f"  (fastest call / fastest memcpy per run: {', '.join('%.2f' % v for v in vals)}; not the target's measure)")
wire = [row["wire_exact"] for row in table if "wire_exact" in row]
print(f"wire bytes == prediction: {sum(wire)} of {len(wire)} runs")
print(f"all checks passed: {all(row['checks'] for row in table)}")
EOF
