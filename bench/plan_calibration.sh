#!/bin/bash
# sy-plan CPU calibration (issue 11, docs/plan.md "CPU calibration"): measure the model's
# operations on this machine (sy-plan --calibrate, under sy-run -n 2 for the 2-rank layouts so
# both ranks measure at once and the collectives run over comm), predict the training step with
# the planner's formulas, and measure the real step (sy-train, 1 rank; sy-run -n 2 with EP 2 and
# with DP 2). Rounds alternate calibration, prediction and measurement so both see the same load.
# Prints one line per round and run, then the medians over rounds and predicted / measured, for
# wall time (the check) and for CPU time per step (--calibrate_cpu_clock vs user + sys of the
# ranks), which the load of other jobs on a shared machine changes much less.
#
# Usage: bench/plan_calibration.sh [BUILD_DIR] [ROUNDS]   (defaults: build, 5)
# Env: PRESET (tiny), BATCH (4 sequences per step, global), SEQ (256), STEPS (6; the step time
# of a run is the median of its steps after the first two), OUT (work folder), NICE (e.g. -10:
# run every measured process at that priority (root only), so that on a machine loaded by other
# jobs the measurement approximates a quiet machine; the default 0 measures under the load),
# TIME_BIN (/usr/bin/time), CORPUS (a copy of the default corpus file for machines without
# the `bible` program, e.g. the bundle's share/kjv.txt; scripts/gpu-check.sh passes it).
set -euo pipefail
B=$(cd "${1:-build}" && pwd); ROUNDS=${2:-5}
PRESET=${PRESET:-tiny}; BATCH=${BATCH:-4}; SEQ=${SEQ:-256}; STEPS=${STEPS:-6}
OUT=${OUT:-$(mktemp -d /tmp/plan_calibration.XXXXXX)}
PY=${PY:-/usr/bin/python3}
NICE=${NICE:-0}
mkdir -p "$OUT"
TIME_BIN=${TIME_BIN:-/usr/bin/time}
if [ -n "${CORPUS:-}" ] && [ ! -s "$OUT/kjv.txt" ]; then cp "$CORPUS" "$OUT/kjv.txt"; fi
RUN=(nice -n "$NICE" "$B/bin/sy-run" --timeout 300)
# sy-train's byte tokenizer makes the vocabulary 256: the planner gets the same model.
# --optimizer_full_model: sy-train without --zero1 runs AdamW over the whole model on every rank.
PLAN=("$B/bin/sy-plan" --model "$PRESET" --vocab 256 --seq "$SEQ" --batch "$BATCH" --mtp 1 --recipe fp32
      --recompute none --cluster cpu-2core --pp 1 --schedule 1f1b --comm_sms 0 --zero1=false --optimizer_full_model --calibrate
      --calibrate_sample_s 0.03 --json)
TRAIN=("$B/bin/sy-train" --preset "$PRESET" --data default --corpus_cache "$OUT/kjv.txt" --batch "$BATCH"
       --seq "$SEQ" --steps "$STEPS" --threads 1 --warmup 2 --log_every 1000 --expert_payload fp32)

step_of_plan() { $PY -c 'import json,sys; t=sys.stdin.read(); d=json.loads(t[t.index("{"):]); print(d["time_s"]["step"])'; }
step_of_log() {  # median of the steps after the first two
  $PY -c 'import json,sys,statistics; s=[json.loads(l)["seconds"] for l in open(sys.argv[1])][2:]; print(statistics.median(s))' "$1"
}
load() { cut -d' ' -f1 /proc/loadavg; }
# CPU seconds per step of the busiest rank: (user + sys of a STEPS-step run - of a 2-step run)
# / (STEPS - 2), per rank, max over ranks. Files $1.<rank> and $2.<rank> from /usr/bin/time.
cpu_per_step() {
  $PY - "$1" "$2" "$3" "$STEPS" <<'PYEOF'
import glob, sys
full, short, n, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def cpu(path): u, s = open(path).read().split()[-2:]; return float(u) + float(s)
print(max((cpu(f"{full}.{r}") - cpu(f"{short}.{r}")) / (steps - 2) for r in range(n)))
PYEOF
}
# Runs sy-train (args after the output prefix) with /usr/bin/time writing PREFIX.<rank>.
TIMED=(env TIME_BIN="$TIME_BIN" bash -c '"$TIME_BIN" -f "%U %S" -o "$0.${SY_RANK:-0}" "$@"')

echo "# sy-plan calibration: $PRESET, batch $BATCH x $SEQ, fp32, 1 BLAS thread per rank; $(nproc) cores; nice $NICE; $(date -u +%FT%TZ)"
echo "# wall: step seconds (sy-train log, median of steps 3..$STEPS) vs sy-plan --calibrate"
echo "# cpu: CPU seconds per step of the busiest rank ((run of $STEPS steps - run of 2) / $((STEPS - 2))) vs --calibrate_cpu_clock"
echo "# round run     load  wall_pred  wall_meas  ratio   cpu_pred  cpu_meas  ratio"
RES="$OUT/results.txt"; : > "$RES"
for r in $(seq 1 "$ROUNDS"); do
  for run in single ep2 dp2; do
    case $run in
      single) lay=(--gpus_per_node 1 --ep 1 --dp 1 --micro_batch "$BATCH"); n=1; dist=() ;;
      ep2)    lay=(--gpus_per_node 2 --ep 2 --dp 1 --micro_batch $((BATCH / 2))); n=2; dist=(--ep 2 --dp 1) ;;
      dp2)    lay=(--gpus_per_node 2 --ep 1 --dp 2 --micro_batch $((BATCH / 2))); n=2; dist=(--ep 1 --dp 2) ;;
    esac
    l0=$(load)
    launch=(nice -n "$NICE"); [ "$n" = 1 ] || launch=("${RUN[@]}" -n "$n" --tag-output=false --)
    p=$("${launch[@]}" "${PLAN[@]}" "${lay[@]}" --calibrate_out "$OUT/cluster-$run.json" | step_of_plan)
    pc=$("${launch[@]}" "${PLAN[@]}" "${lay[@]}" --calibrate_cpu_clock --calibrate_out "$OUT/cluster-$run-cpu.json" |
         step_of_plan)
    rm -f "$OUT/$run.jsonl"
    [ "$n" = 1 ] || launch=("${RUN[@]}" -n "$n" --)
    "${launch[@]}" "${TIMED[@]}" "$OUT/cpu-$run-full" "${TRAIN[@]}" "${dist[@]}" --log_jsonl "$OUT/$run.jsonl" \
      > "$OUT/$run.log" 2>&1
    "${launch[@]}" "${TIMED[@]}" "$OUT/cpu-$run-short" "${TRAIN[@]}" "${dist[@]}" --steps 2 > "$OUT/$run-short.log" 2>&1
    m=$(step_of_log "$OUT/$run.jsonl")
    mc=$(cpu_per_step "$OUT/cpu-$run-full" "$OUT/cpu-$run-short" "$n")
    echo "$r $run $l0 $p $m $pc $mc" >> "$RES"
    printf "%-7s %-7s %5s  %9.3f  %9.3f  %5.2f  %9.3f  %8.3f  %5.2f\n" "$r" "$run" "$l0" "$p" "$m" \
      "$($PY -c "print($p / $m)")" "$pc" "$mc" "$($PY -c "print($pc / $mc)")"
  done
done
$PY - "$RES" <<'EOF2'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("\n# medians over rounds (each column's median; ratio = predicted / measured)")
print("| run | layout | ranks | load avg | wall predicted s | wall measured s | ratio | CPU predicted s | CPU measured s | ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
for run, desc, ranks in (("single", "pp1 ep1 dp1", 1), ("ep2", "pp1 ep2 dp1", 2), ("dp2", "pp1 ep1 dp2", 2)):
    rs = [r for r in rows if r[1] == run]
    if not rs: continue
    ld, p, m, pc, mc = (statistics.median(float(r[i]) for r in rs) for i in range(2, 7))
    print(f"| {run} | {desc} | {ranks} | {ld:.1f} | {p:.3f} | {m:.3f} | {p / m:.2f} | {pc:.3f} | {mc:.3f} | {pc / mc:.2f} |")
EOF2
echo "# work folder: $OUT (cluster-*.json: the calibrated cluster descriptions of the last round)"
