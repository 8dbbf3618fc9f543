#!/usr/bin/env bash
# `make demo`: the main job on local ranks. In order: the launcher and topology (4 ranks on
# 2 virtual nodes), a checked all_to_all over shared memory and UCX, the pipeline simulator
# with its timeline picture, and a distributed training run of the tiny preset on the
# default corpus (PP 2 x EP 2 under DualPipeV, EP across 2 virtual nodes) ending with a
# generated sample, the Perfetto trace and the timeline picture. Each step
# prints the command it runs.
set -euo pipefail
build=${1:-build}
bin=$build/bin
out=${DEMO_OUT:-runs/demo}
mkdir -p "$out"
step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "4 ranks on 2 virtual nodes: each reports its node, local rank and rail" \
  "$bin/sy-run" -n 4 --nodes 2 --timeout 60 -- "$bin/sy-topo" --json
step "all_to_all over shared memory (same node) and UCX tcp (across nodes), checked" \
  "$bin/sy-run" -n 4 --nodes 2 --timeout 120 -- "$bin/sy-a2a-perf" -b 1K -e 1M -f 4 -c 1
step "DualPipeV vs its peers on 8 ranks, 20 micro-batches (simulated)" \
  "$bin/sy-pipe-sim" --schedule all --ranks 8 --microbatches 20
"$bin/sy-pipe-sim" --schedule dualpipev --ranks 4 --microbatches 10 --svg "$out/dualpipev.svg" \
  --trace "$out/dualpipev.trace.json" >/dev/null && echo "timeline: $out/dualpipev.svg, trace: $out/dualpipev.trace.json"
# Distributed: tiny preset on 4 ranks, PP 2 x EP 2 under DualPipeV (4 micro-batches per
# step; pipeline rank 0 holds the embedding, the first layers, the head and MTP). The rank
# map puts rank r on virtual node r % 2, so each EP group ({0,1} and {2,3}) spans both nodes
# and the node-limited two-hop dispatch runs (FP8 tokens / BF16 combine over UCX).
step "distributed training job (PP 2 x EP 2, DualPipeV, EP across 2 virtual nodes)" \
  "$bin/sy-run" -n 4 --rank-map "$(dirname "$0")/demo-ranks-interleaved.json" --timeout 330 -- "$bin/sy-train" --demo \
  --preset tiny --pp 2 --ep 2 --schedule dualpipev --microbatches 4 --threads 1 --ckpt_dir= --out "$out/train"
printf '\ndemo outputs are in %s\n' "$out"
