#!/usr/bin/env bash
# sy-train on 2 ranks with --grad_accum 2, --fp8 (Linear GEMMs) and --zero1 checkpoints: a
# job stopped after step 2 and rerun with --resume ends with sharded checkpoint files
# byte-identical to an uninterrupted 4-step job (same layout), and the optimizer state in
# them is sharded ("exp_avg.<name>@<first element>" slices).
# usage: accum_fp8_zero1_resume.sh SY_RUN SY_TRAIN DATA
set -u
run=$1 train=$2 data=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--preset nano --data "$data" --batch 4 --seq 16 --grad_accum 2 --fp8 --zero1 --ep 2 --threads 1
      --log_every 1 --warmup 0 --lr_decay constant --ckpt_every 2 --expert_payload fp32)
fail() { echo "FAIL: $*"; exit 1; }

"$run" -n 2 --timeout 100 -- "$train" "${args[@]}" --steps 4 --ckpt_dir "$work/ref" > "$work/ref.log" 2>&1 \
  || { cat "$work/ref.log"; fail "the uninterrupted run failed"; }
"$run" -n 2 --timeout 100 -- "$train" "${args[@]}" --steps 2 --ckpt_dir "$work/cut" > "$work/cut.log" 2>&1 \
  || { cat "$work/cut.log"; fail "the 2-step run failed"; }
"$run" -n 2 --timeout 100 -- "$train" "${args[@]}" --steps 4 --ckpt_dir "$work/cut" --resume > "$work/resume.log" 2>&1 \
  || { cat "$work/resume.log"; fail "the resumed run failed"; }
grep -q "resumed from .*step-2" "$work/resume.log" || { cat "$work/resume.log"; fail "the rerun did not resume at step 2"; }
grep -q 'exp_avg\.model\.[^"]*@' "$work/ref/step-4/rank-1.safetensors" || fail "rank 1 holds no optimizer shard"
for f in "$work"/ref/step-4/rank-*.safetensors; do
  cmp -s "$f" "$work/cut/step-4/$(basename "$f")" || fail "$(basename "$f") differs from the uninterrupted run"
done
grep "step      4/4" "$work/ref.log"
echo PASS
