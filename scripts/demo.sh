#!/usr/bin/env bash
# `make demo`: the main job on local ranks. It shows, in order, each part that is built:
# the launcher and topology (4 ranks on 2 virtual nodes), the pipeline simulator, and the
# reference trainer once it exists (tools sy-train). Each step prints what it runs.
set -euo pipefail
build=${1:-build}
bin=$build/bin
out=${DEMO_OUT:-runs/demo}
mkdir -p "$out"
step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "4 ranks on 2 virtual nodes: each reports its node, local rank and rail" \
  "$bin/sy-run" -n 4 --nodes 2 --timeout 60 -- "$bin/sy-topo" --json
if [[ -x $bin/sy-a2a-perf ]]; then
  step "all_to_all over shared memory (same node) and UCX tcp (across nodes), checked" \
    "$bin/sy-run" -n 4 --nodes 2 --timeout 120 -- "$bin/sy-a2a-perf" -b 1K -e 1M -f 4 -c 1
fi
if [[ -x $bin/sy-pipe-sim ]]; then
  step "DualPipeV vs its peers on 8 ranks, 20 micro-batches (simulated)" \
    "$bin/sy-pipe-sim" --schedule all --ranks 8 --microbatches 20
  "$bin/sy-pipe-sim" --schedule dualpipev --ranks 4 --microbatches 10 --svg "$out/dualpipev.svg" \
    --trace "$out/dualpipev.trace.json" >/dev/null && echo "timeline: $out/dualpipev.svg, trace: $out/dualpipev.trace.json"
fi
if [[ -x $bin/sy-train ]]; then
  # Distributed: tiny preset, 4 ranks on 2 virtual nodes, EP 4 across both nodes (two-hop
  # dispatch, FP8 tokens / BF16 combine); no pipeline yet (docs/distributed.md).
  step "distributed training job (EP 4 over 2 virtual nodes)" \
    "$bin/sy-run" -n 4 --nodes 2 --timeout 330 -- "$bin/sy-train" --demo --preset tiny --ep 4 --threads 1 \
    --out "$out/train"
fi
printf '\ndemo outputs are in %s\n' "$out"
