#!/usr/bin/env bash
# sy-train end to end: train with checkpoints and JSONL, resume to more steps, then sample
# from the checkpoint with speculative decoding (must equal plain decoding).
set -euo pipefail
bin=$1
data=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
common=(--data="$data" --batch=2 --seq=16 --mtp_depth=1 --warmup=1 --ckpt_dir="$dir/ckpt"
        --log_jsonl="$dir/m.jsonl" --log_every=1 --max_position=64 --eval_every=2 --eval_batches=1 --threads=1)
"$bin" "${common[@]}" --steps=3 > "$dir/a.log"
grep -q "step      3/3" "$dir/a.log" || { cat "$dir/a.log"; echo "FAIL: no step 3"; exit 1; }
"$bin" "${common[@]}" --steps=5 --resume > "$dir/b.log"
grep -q "resumed from .*step-00000003 at step 3" "$dir/b.log" || { cat "$dir/b.log"; echo "FAIL: no resume"; exit 1; }
grep -q "step      5/5" "$dir/b.log" || { cat "$dir/b.log"; echo "FAIL: no step 5"; exit 1; }
[[ $(grep -c '"type":"train"' "$dir/m.jsonl") == 5 ]] || { cat "$dir/m.jsonl"; echo "FAIL: JSONL lines"; exit 1; }
grep -q '"type":"eval"' "$dir/m.jsonl" || { echo "FAIL: no eval line"; exit 1; }
[[ $(cat "$dir/ckpt/latest") == step-00000005 ]] || { echo "FAIL: latest"; exit 1; }
"$bin" --generate --checkpoint="$dir/ckpt" --prompt="The " --max_new_tokens=20 > "$dir/g.log"
grep -q "model from .*step-00000005 (step 5)" "$dir/g.log" || { cat "$dir/g.log"; echo "FAIL: model"; exit 1; }
grep -q "tokens identical to plain decoding" "$dir/g.log" || { cat "$dir/g.log"; echo "FAIL: speculative"; exit 1; }
echo "sy-train end to end: OK"
