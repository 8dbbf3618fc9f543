#!/usr/bin/env bash
# Distributed trainer with pipeline stages: tokens/s of the tiny preset on 1, 2 and 4 ranks
# with the same global batch (16 x 64 tokens) and micro-batch split (4), all measured in
# this run one after the other:
#   1 rank : sy-train one process, --batch 4 --grad_accum 4 (the baseline)
#   2 ranks: PP 2 DualPipeV (EP 1)
#   4 ranks: PP 2 x EP 2 DualPipeV, EP across 2 virtual nodes (interleaved rank map, two-hop),
#            first with the FB pairs run forward then backward (SWITCHYARD_TRAIN_FB_OVERLAP=0,
#            the before), then overlapped (the default, the after)
#   4 ranks: EP 4 x DP 1 without stages (DistTrainer, --grad_accum 4), for reference
#   then PP 2 x EP 2 with 8 micro-batches (more FB pairs per step), serial and overlapped.
# Each prints the median tokens/s over the steps after the first and, for the distributed
# runs, the step breakdown of the last 4 (traced) steps: compute, exposed communication,
# other (pipeline bubble + optimizer), and the share of communication hidden; with
# overlapped FB pairs also the communication issued from them and the share of it hidden.
# Knobs: STEPS (default 12), OUT (default runs/bench-pipeline).
set -euo pipefail
build=${1:-build}
bin=$build/bin
here=$(cd "$(dirname "$0")" && pwd)
steps=${STEPS:-12}
out=${OUT:-runs/bench-pipeline}
mkdir -p "$out"
common=(--preset=tiny --data=default --steps="$steps" --seq=64 --threads=1 --log_every=1000 --eval_every=0)
report() {  # name, log
  local tps
  tps=$(grep -o '[0-9.]* tokens/s (median)' "$2" | head -1 | cut -d' ' -f1 || true)
  [[ -z $tps ]] && tps=$(python3 - "$3" <<'PY'
import json, sys, statistics
v = [json.loads(l)["tokens_per_s"] for l in open(sys.argv[1]) if '"train"' in l][1:]
print(round(statistics.median(v)) if v else "n/a")
PY
)
  printf '%-34s %8s tokens/s  %s\n' "$1" "$tps" "$(grep -o 'step time.*hidden [0-9]*%' "$2" | head -1 || true)"
  grep -o 'FB pairs (traced steps).*' "$2" | head -1 | sed 's/^/    /' || true
}
run1() {
  rm -f "$out/one.jsonl"
  "$bin/sy-train" "${common[@]}" --batch=4 --grad_accum=4 --log_jsonl="$out/one.jsonl" > "$out/one.log" 2>&1
  report "1 rank (one process, accum 4)" "$out/one.log" "$out/one.jsonl"
}
runn() {  # name, sy-run placement..., -- sy-train flags...
  local name=$1
  shift
  local place=()
  while [[ $1 != -- ]]; do place+=("$1"); shift; done
  shift
  "$bin/sy-run" "${place[@]}" --timeout 600 -- "$bin/sy-train" "${common[@]}" --batch=16 "$@" \
    > "$out/$name.log" 2>&1
  report "$name" "$out/$name.log" /dev/null
}
echo "trainer_pipeline: tiny, global batch 16 x 64, 4 micro-batches, $steps steps; logs in $out"
uptime
run1
runn "2 ranks PP 2 dualpipev" -n 2 -- --pp=2 --ep=1 --schedule=dualpipev --microbatches=4
SWITCHYARD_TRAIN_FB_OVERLAP=0 runn "4 ranks PP 2 x EP 2, serial FB pairs" -n 4 \
  --rank-map "$here/../scripts/demo-ranks-interleaved.json" -- --pp=2 --ep=2 --schedule=dualpipev --microbatches=4
runn "4 ranks PP 2 x EP 2 dualpipev" -n 4 --rank-map "$here/../scripts/demo-ranks-interleaved.json" -- \
  --pp=2 --ep=2 --schedule=dualpipev --microbatches=4
runn "4 ranks EP 4 (no stages, accum 4)" -n 4 --nodes 2 -- --ep=4 --batch=4 --grad_accum=4
# More FB pairs per step: 8 micro-batches of 2 sequences (same global batch).
SWITCHYARD_TRAIN_FB_OVERLAP=0 runn "4 ranks PP 2 x EP 2, M 8, serial" -n 4 \
  --rank-map "$here/../scripts/demo-ranks-interleaved.json" -- --pp=2 --ep=2 --schedule=dualpipev --microbatches=8
runn "4 ranks PP 2 x EP 2, M 8, overlapped" -n 4 --rank-map "$here/../scripts/demo-ranks-interleaved.json" -- \
  --pp=2 --ep=2 --schedule=dualpipev --microbatches=8
uptime
