#!/usr/bin/env bash
# sy-train with pipeline stages (PP 2 x EP 2, DualPipeV, 4 micro-batches) on 4 ranks over 2
# virtual nodes: a job stopped after step 2 and rerun with --resume ends with sharded
# checkpoint files byte-identical to an uninterrupted 4-step job (same layout); every rank
# writes a file (its stages' parameters and moments).
# usage: pipeline_resume.sh SY_RUN SY_TRAIN DATA
set -u
run=$1 train=$2 data=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--preset nano --data "$data" --batch 16 --seq 16 --pp 2 --ep 2 --schedule dualpipev --microbatches 4
      --threads 1 --log_every 1 --warmup 0 --lr_decay constant --ckpt_every 2 --expert_payload fp32)
fail() { echo "FAIL: $*"; exit 1; }

"$run" -n 4 --nodes 2 --timeout 100 -- "$train" "${args[@]}" --steps 4 --ckpt_dir "$work/ref" > "$work/ref.log" 2>&1 \
  || { cat "$work/ref.log"; fail "the uninterrupted run failed"; }
"$run" -n 4 --nodes 2 --timeout 100 -- "$train" "${args[@]}" --steps 2 --ckpt_dir "$work/cut" > "$work/cut.log" 2>&1 \
  || { cat "$work/cut.log"; fail "the 2-step run failed"; }
"$run" -n 4 --nodes 2 --timeout 100 -- "$train" "${args[@]}" --steps 4 --ckpt_dir "$work/cut" --resume \
  > "$work/resume.log" 2>&1 || { cat "$work/resume.log"; fail "the resumed run failed"; }
grep -q "resumed from .*step-2" "$work/resume.log" || { cat "$work/resume.log"; fail "the rerun did not resume at step 2"; }
for r in 0 1 2 3; do
  [[ -s $work/ref/step-4/rank-$r.safetensors ]] || fail "rank $r wrote no checkpoint file"
done
grep -q '"pp": 2' "$work/ref/step-4/meta.json" || fail "meta.json does not record the layout"
for f in "$work"/ref/step-4/rank-*.safetensors; do
  cmp -s "$f" "$work/cut/step-4/$(basename "$f")" || fail "$(basename "$f") differs from the uninterrupted run"
done
grep "step      4/4" "$work/ref.log"
echo PASS
