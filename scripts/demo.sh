#!/usr/bin/env bash
# `make demo`: the main job on local ranks. In order: the launcher and topology (4 ranks on
# 2 virtual nodes), a checked all_to_all over shared memory and UCX, the pipeline simulator
# with its timeline picture, and a distributed training run of the tiny preset on the
# default corpus (EP 4 across 2 virtual nodes) ending with a generated sample. Each step
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
# Distributed: tiny preset, 4 ranks on 2 virtual nodes, EP 4 across both nodes (two-hop
# dispatch, FP8 tokens / BF16 combine); no pipeline stages yet (docs/distributed.md).
step "distributed training job (EP 4 over 2 virtual nodes)" \
  "$bin/sy-run" -n 4 --nodes 2 --timeout 330 -- "$bin/sy-train" --demo --preset tiny --ep 4 --threads 1 \
  --out "$out/train"
printf '\ndemo outputs are in %s\n' "$out"
