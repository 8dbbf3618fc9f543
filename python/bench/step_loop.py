"""Runs Switchyard dispatch + combine from Python in a loop, for a CPU profiler to sample.

Run: sy-run -n 4 [--nodes 2] -- /usr/bin/python3 python/bench/step_loop.py --tokens T --seconds S --ready DIR [--flat]
Same step as dispatch_vs_gloo.py (H 1024 float32, 2 experts per rank, top-4, recv_x=False,
identity experts, weighted combine). Each rank creates DIR/ready.<rank> once its Buffer is
built and warmed up (so the profiler can attach after the imports), then loops until S
seconds have passed (all ranks stop at the same iteration) and prints its iteration count.
"""
import argparse
import os
import time

import torch
import switchyard as sy

p = argparse.ArgumentParser()
p.add_argument("--tokens", type=int, default=256)
p.add_argument("--hidden", type=int, default=1024)
p.add_argument("--seconds", type=float, default=10.0)
p.add_argument("--ready", default="")
p.add_argument("--flat", action="store_true", help="Buffer(two_hop=False)")
a = p.parse_args()
torch.set_num_threads(1)
world = sy.init()
R, me, K = world.size, world.rank, 4
E = 2 * R
g = torch.Generator().manual_seed(me)
x = torch.randn(a.tokens, a.hidden, generator=g)
idx = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(a.tokens)])
w = torch.rand(a.tokens, K, generator=g)
buf = sy.Buffer(world, num_experts=E, hidden=a.hidden, max_tokens_per_rank=a.tokens, two_hop=not a.flat)


def step():
    out = buf.dispatch(x, idx, w, recv_x=False)
    return buf.combine(out.expert_x, out.handle, out.recv_topk_weights)


step()
if a.ready:
    open(os.path.join(a.ready, f"ready.{me}"), "w").close()
t_end, n = time.time() + a.seconds, 0
while True:
    stop = sy.all_reduce(world, torch.tensor([1.0 if time.time() > t_end else 0.0]))
    if stop.item() > 0:
        break
    step()
    n += 1
print(f"rank {me}: {n} steps of T={a.tokens}")
