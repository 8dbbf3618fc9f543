#!/usr/bin/python3
"""Training-step throughput of the PyTorch reference, the baseline for the C++ trainer.

One step = forward (main + MTP, FP32) + backward of loss.total + torch.optim.AdamW step
+ the bias update b += gamma * sign(mean(counts) - counts) per MoE layer.
Experts run batched with index operations (ds3_reference.moe), no per-token loops.
Prints one JSON line: tokens/s = batch * seq / median step time over --steps steps
(after --warmup untimed steps). Not a ctest; run by hand or by the C++ benchmark.

  /usr/bin/python3 tests/reference/bench_train_step.py --config trainer/configs/tiny.json \
      --batch 4 --seq 128 --threads 2 --steps 5
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ds3_reference as ref  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=os.path.join(REPO, "trainer", "configs", "tiny.json"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--gamma", type=float, default=1e-3, help="bias update rate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = ref.load_config(args.config)
    params = {n: t.float() for n, t in ref.init_random(cfg, args.seed).items()}
    biases = {n: t for n, t in params.items() if n.endswith("e_score_correction_bias")}
    trainable = [t.requires_grad_(True) for n, t in params.items() if n not in biases]
    opt = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(args.seed + 1)
    tokens = torch.randint(0, cfg.vocab_size,
                           (args.batch, args.seq + cfg.num_nextn_predict_layers + 1), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        r = ref.forward(params, tokens, cfg)
        r["loss_total"].backward()
        opt.step()
        with torch.no_grad():
            for layer, counts in r["expert_counts"].items():
                c = counts.float()
                b = biases[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"]
                b += args.gamma * torch.sign(c.mean() - c)
        return float(r["loss_total"])

    for _ in range(args.warmup):
        step()
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({
        "impl": "pytorch-reference", "torch": torch.__version__,
        "config": os.path.basename(args.config), "batch": args.batch, "seq": args.seq,
        "threads": args.threads, "steps": args.steps, "dtype": "float32",
        "median_step_s": round(median, 6), "min_step_s": round(min(times), 6),
        "tokens_per_s": round(args.batch * args.seq / median, 2),
        "first_loss": losses[0], "last_loss": losses[-1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
