#!/bin/bash
# CPU calibration of docs/plan.md: predicted (sy-plan --calibrate, per-op SGEMM rates measured
# here) vs measured (sy-trainer-bench) step time of the single-process trainer, alternated
# 5 times. Usage: tools/sy-plan/calibrate_cpu.sh BUILD_DIR [preset batch seq]
set -euo pipefail
B=${1:-build}; CFG=${2:-tiny}; BATCH=${3:-4}; SEQ=${4:-256}
for i in 1 2 3 4 5; do
  m=$("$B/bin/sy-trainer-bench" --config "$CFG" --batch "$BATCH" --seq "$SEQ" --threads 1 --rounds 1 --steps 5 --json |
      tail -1 | sed 's/.*"step_s": \([0-9.]*\).*/\1/')
  p=$("$B/bin/sy-plan" --model "$CFG" --seq "$SEQ" --batch "$BATCH" --micro_batch "$BATCH" --mtp 1 --recipe fp32 \
      --recompute none --cluster cpu-2core --gpus_per_node 1 --pp 1 --ep 1 --dp 1 --schedule 1f1b --comm_sms 0 \
      --calibrate --json | sed 's/.*"step":\([0-9.e-]*\).*/\1/')
  echo "run $i measured_s $m predicted_s $p"
done
