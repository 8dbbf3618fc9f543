#!/usr/bin/env bash
# A rank killed in the middle of a distributed sy-train job: the job stops with an error
# naming the rank (no hang: bounded by timeouts), and a rerun with --resume continues from
# the last sharded checkpoint to a final checkpoint bitwise identical to an uninterrupted
# run on the same layout.
# usage: kill_resume.sh SY_RUN SY_TRAIN DATA [SY_TRAIN FLAGS...] (e.g. a layout with stages)
set -u
run=$1 train=$2 data=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--preset nano --data "$data" --steps 24 --batch 8 --seq 64 --threads 1 --log_every 1 --warmup 0
      --ckpt_every 4 --expert_payload fp32 "$@")
fail() { echo "FAIL: $*"; exit 1; }

# 1. Uninterrupted reference run.
"$run" -n 4 --nodes 2 --timeout 100 -- "$train" "${args[@]}" --ckpt_dir "$work/ref" > "$work/ref.log" 2>&1 \
  || { cat "$work/ref.log"; fail "the uninterrupted run failed"; }

# 2. Same job; SIGKILL rank 2 once it has passed step 9 (a checkpoint exists at step 8).
"$run" -n 4 --nodes 2 --timeout 100 -- "$train" "${args[@]}" --ckpt_dir "$work/cut" > "$work/cut.log" 2>&1 &
job=$!
# (Poll often: on an idle machine a step takes tens of ms; 14 steps remain after step 10.)
for _ in $(seq 1 3000); do
  grep -q "step     10/24" "$work/cut.log" && break
  sleep 0.02
done
# The ranks are sy-run's children; rank 2 is the one with SY_RANK=2 in its environment.
victim=
for pid in $(ps -o pid= --ppid $job); do
  if tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep -qx SY_RANK=2; then victim=$pid; fi
done
[[ -n $victim ]] || { cat "$work/cut.log"; fail "no rank 2 process to kill (the job ended before step 10?)"; }
kill -9 "$victim"
wait $job
status=$?
[[ $status -ne 0 ]] || fail "the job with a killed rank exited 0"
grep -q "rank 2" "$work/cut.log" || { cat "$work/cut.log"; fail "no error names rank 2"; }
[[ -d $work/cut/step-24 ]] && fail "the killed job still finished"

# 3. Rerun with --resume: continues from the last checkpoint, ends where the reference ends.
"$run" -n 4 --nodes 2 --timeout 100 -- "$train" "${args[@]}" --ckpt_dir "$work/cut" --resume > "$work/resume.log" 2>&1 \
  || { cat "$work/resume.log"; fail "the resumed run failed"; }
grep -q "resumed from .*step-" "$work/resume.log" || fail "the rerun did not resume"
for f in "$work"/ref/step-24/rank-*.safetensors; do
  cmp -s "$f" "$work/cut/step-24/$(basename "$f")" || fail "$(basename "$f") differs from the uninterrupted run"
done
echo "killed rank 2: $(grep -m1 'rank 2' "$work/cut.log")"
echo "$(grep -m1 'resumed from' "$work/resume.log"); final shards bitwise identical"
echo PASS
