"""Benchmark: dispatch + combine from Python (switchyard.Buffer) against the same exchange
written with torch.distributed gloo all_to_all_single, in the same job.

Run: sy-run -n 4 --nodes 2 -- /usr/bin/python3 python/bench/dispatch_vs_gloo.py [--tokens T]
Both sides move the same rows: each token once to every rank holding one of its experts,
identity experts, gate-weighted sum back at the source. The gloo side is what a PyTorch user
on CPU writes otherwise: counts exchange, index_select packing, two all_to_all_single for the
payload there and back, index_add to sum. Rounds alternate between the two; each round times
--iters iterations; the report is the median over --rounds (>= 5) rounds. Rank 0 prints one
line (and --json prints a JSON object).
"""
import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import switchyard as sy

p = argparse.ArgumentParser()
p.add_argument("--tokens", type=int, default=256)
p.add_argument("--hidden", type=int, default=1024)
p.add_argument("--experts-per-rank", type=int, default=2)
p.add_argument("--topk", type=int, default=4)
p.add_argument("--iters", type=int, default=10)
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--json", action="store_true")
p.add_argument("--flat", action="store_true", help="Buffer(two_hop=False): direct exchange like gloo")
a = p.parse_args()
torch.set_num_threads(1)

world = sy.init()
R, me = world.size, world.rank
E, L, T, H, K = a.experts_per_rank * world.size, a.experts_per_rank, a.tokens, a.hidden, a.topk
path = os.path.join(tempfile.gettempdir(), f"sy_py_bench_{os.environ.get('SY_JOB_ID', os.getppid())}")
dist.init_process_group("gloo", init_method=f"file://{path}", rank=me, world_size=R)

g = torch.Generator().manual_seed(me)
x = torch.randn(T, H, generator=g)
idx = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
w = torch.rand(T, K, generator=g)
buf = sy.Buffer(world, num_experts=E, hidden=H, max_tokens_per_rank=T, two_hop=not a.flat)


def switchyard_step():
    out = buf.dispatch(x, idx, w, recv_x=False)
    return buf.combine(out.expert_x, out.handle, out.recv_topk_weights)


dest = idx // L  # [T, K] destination rank of each slot
in_rank = torch.zeros(T, R, dtype=torch.bool)
in_rank.scatter_(1, dest, True)


def gloo_step():
    # Dispatch: pack per destination, exchange counts, then rows and routing.
    order = torch.cat([torch.nonzero(in_rank[:, d]).flatten() for d in range(R)])
    sc = in_rank.sum(0)
    rc = torch.empty_like(sc)
    dist.all_to_all_single(rc, sc)
    sc_l, rc_l = sc.tolist(), rc.tolist()
    M = sum(rc_l)
    recv_x = torch.empty(M, H)
    dist.all_to_all_single(recv_x, x.index_select(0, order), rc_l, sc_l)
    meta = torch.cat([idx.index_select(0, order).float(), w.index_select(0, order)], 1)
    recv_meta = torch.empty(M, 2 * K)
    dist.all_to_all_single(recv_meta, meta, rc_l, sc_l)
    # Identity experts: each received token weighted by its local slots' gate weights.
    local = (recv_meta[:, :K].long() // L) == me
    wsum = (recv_meta[:, K:] * local).sum(1, keepdim=True)
    back = torch.empty(int(sum(sc_l)), H)
    dist.all_to_all_single(back, recv_x * wsum, sc_l, rc_l)
    y = torch.zeros(T, H)
    y.index_add_(0, order, back)
    return y


# Same result first (identity experts), then timing.
y_sy, y_gloo = switchyard_step(), gloo_step()
assert torch.allclose(y_sy, y_gloo, rtol=1e-4, atol=1e-4), (y_sy - y_gloo).abs().max()

times = {"switchyard": [], "gloo": []}
for r in range(a.rounds):
    for name, fn in (("switchyard", switchyard_step), ("gloo", gloo_step)):
        world.barrier()
        t0 = time.perf_counter()
        for _ in range(a.iters):
            fn()
        world.barrier()
        times[name].append((time.perf_counter() - t0) / a.iters * 1e6)

med = {k: statistics.median(v) for k, v in times.items()}
load = os.getloadavg()[0]
if me == 0:
    res = dict(two_hop=buf.uses_two_hop, ranks=R, nodes=world.num_nodes, tokens=T, hidden=H, experts=E, topk=K, rounds=a.rounds, iters=a.iters,
               switchyard_us=round(med["switchyard"], 1), gloo_us=round(med["gloo"], 1),
               speedup=round(med["gloo"] / med["switchyard"], 2), loadavg_1m=round(load, 2),
               rounds_us={k: [round(t, 1) for t in v] for k, v in times.items()})
    if a.json:
        print(json.dumps(res))
    else:
        print(f"dispatch+combine T={T} H={H} E={E} K={K} on {R} ranks / {world.num_nodes} nodes: "
              f"switchyard {med['switchyard']:.0f} us, gloo all_to_all_single {med['gloo']:.0f} us, "
              f"speedup {med['gloo'] / med['switchyard']:.2f}x (median of {a.rounds}; load {load:.1f})")
dist.destroy_process_group()
if me == 0 and os.path.exists(path):
    os.remove(path)
