#!/usr/bin/env python3
"""Sensitivity table of docs/plan.md: the V3 report layout on H800 with one assumption changed
at a time. Usage: tools/sy-plan/sensitivity.py BUILD_DIR (prints a Markdown table)."""
import json
import os
import subprocess
import sys
import tempfile

build = sys.argv[1] if len(sys.argv) > 1 else "build"
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
base_cluster = json.load(open(os.path.join(root, "trainer/clusters/h800.json")))


def run(flags=(), edit=None):
    cluster = json.loads(json.dumps(base_cluster))
    if edit:
        edit(cluster)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cluster, f)
    try:
        out = subprocess.run([os.path.join(build, "bin/sy-plan"), "--json", "--cluster", f.name, *flags],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    return json.loads(out)


def scale(key, factor):
    def edit(c):
        if isinstance(c[key], dict):
            c[key] = {k: v * factor for k, v in c[key].items()}
        else:
            c[key] *= factor
        if key == "gemm_tflops":
            for s in c.get("gemm_shapes", []):
                s["tflops"] *= factor
    return edit


cases = [
    ("baseline (report layout, sources of h800.json)", (), None),
    ("FP8 GEMM rates x0.8", (), scale("gemm_tflops", 0.8)),
    ("FP8 GEMM rates x1.2", (), scale("gemm_tflops", 1.2)),
    ("no per-shape GEMM rates (flat median 1041)", (), lambda c: c.pop("gemm_shapes")),
    ("attention rates x0.8", (), lambda c: (scale("attention_fwd_tflops", 0.8)(c), scale("attention_bwd_tflops", 0.8)(c))),
    ("IB 40 GB/s (DeepEP measured ~46)", (), lambda c: c.update(network_gbps=40)),
    ("IB 25 GB/s", (), lambda c: c.update(network_gbps=25)),
    ("NVLink 120 GB/s", (), lambda c: c.update(intra_node_gbps=120)),
    ("HBM bandwidth x0.5", (), scale("memory_bandwidth_gbps", 0.5)),
    ("0 SMs reserved for communication", ("--comm_sms=0",), None),
    ("32 SMs reserved", ("--comm_sms=32",), None),
    ("all-to-all not overlapped", ("--overlap_a2a=false",), None),
    ("DP gradient sync overlapped", ("--overlap_dp_sync",), None),
    ("micro-batch 2 sequences (60 micro-batches)", ("--micro_batch=2",), None),
    ("schedule 1F1B", ("--schedule=1f1b",), None),
    ("schedule ZB-H1", ("--schedule=zb-h1",), None),
    ("schedule DualPipeV (pp 16, 32 stages)", ("--schedule=dualpipev",), None),
    ("no recomputation", ("--recompute=none",), None),
    ("full recomputation", ("--recompute=full",), None),
    ("logits kept (no fused head + loss)", ("--fused_head_loss=false",), None),
    ("BF16 recipe", ("--recipe=bf16",), None),
    ("no MTP", ("--mtp=0",), None),
    ("no ZeRO-1", ("--zero1=false",), None),
]

base = run()
print("| assumption changed | step s | GPU-h / 1T tokens | vs 180K | MFU (FP8 peak) | memory GiB | fits |")
print("|---|---|---|---|---|---|---|")
for name, flags, edit in cases:
    r = run(flags, edit)
    gh = r["gpu_hours_per_trillion_tokens"]
    print(f"| {name} | {r['time_s']['step']:.2f} | {gh / 1e3:.0f}K | {100 * (gh / 180e3 - 1):+.0f}% | "
          f"{100 * r['mfu']:.1f}% | {r['memory_gib']['total']:.1f} | {'yes' if r['memory_gib']['fits'] else 'no'} |")
