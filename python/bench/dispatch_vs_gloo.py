"""Benchmark: dispatch + combine from Python (switchyard.Buffer) against the same exchange
written with torch.distributed gloo all_to_all_single, in the same job or one side per job.

Run (bench/python.sh runs the whole comparison):
    sy-run -n 4 [--nodes 2] -- /usr/bin/python3 python/bench/dispatch_vs_gloo.py --tokens 32,256,1024,4096
    sy-run -n 4 [--nodes 2] -- /usr/bin/python3 python/bench/dispatch_vs_gloo.py --side gloo --check-dir D ...

Both sides move the same rows: each token once to every rank holding one of its experts,
identity experts, gate-weighted sum back at the source. The gloo side is what a PyTorch user
on CPU writes otherwise: counts exchange, index_select packing, all_to_all_single for the
rows and their routing there and for the weighted rows back, index_add_ to sum.

For each token count T: both results are checked equal, then --rounds rounds alternate the
two sides (the order flips every round); a round times --iters steps between barriers.
With --side switchyard|gloo the job runs only that side (no Buffer in a gloo job, no gloo
group in a Switchyard job; both use the Switchyard world communicator for barriers and the
means over ranks), so neither side's memory changes the other's allocations; then each rank
saves its result to --check-dir/<side>.T<T>.r<rank>.pt after the timing and compares it with
the other side's file there if present (written by an earlier job with the same seeds),
reporting "checked" and the largest difference (a mismatch fails the job). The
report is the median over rounds of the step time on rank 0 (microseconds), and the median
over rounds of the CPU time per step (process CPU, all threads, averaged over the ranks) and
of the minor page faults per step (getrusage, averaged over the ranks; JSON "minor_faults").
Afterwards a profiling pass splits each side's step time (averaged over ranks):
switchyard: argument conversion / C++ dispatch+combine (of which: exchange, i.e. the comm
transport) / result conversion (Buffer(profile=True)); gloo: all_to_all_single calls / torch
packing and reduction. Rank 0 prints one line per T, or one JSON object per T (--json).
"""
import argparse
import json
import os
import resource
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import switchyard as sy

p = argparse.ArgumentParser()
p.add_argument("--tokens", default="256", help="comma-separated token counts per rank")
p.add_argument("--hidden", type=int, default=1024)
p.add_argument("--experts-per-rank", type=int, default=2)
p.add_argument("--topk", type=int, default=4)
p.add_argument("--iters", type=int, default=0, help="steps per round (0: 8192 / T, between 2 and 20)")
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--json", action="store_true")
p.add_argument("--flat", action="store_true", help="Buffer(two_hop=False): direct exchange like gloo")
p.add_argument("--side", choices=("both", "switchyard", "gloo"), default="both",
               help="both sides in this job (alternating), or only one (bench/python.sh's isolated mode)")
p.add_argument("--check-dir", default="", help="with --side: where results are saved and compared across jobs")
a = p.parse_args()
run_sy, run_gloo = a.side in ("both", "switchyard"), a.side in ("both", "gloo")
torch.set_num_threads(1)
token_counts = [int(t) for t in a.tokens.split(",")]

world = sy.init()
R, me = world.size, world.rank
E, L, H, K = a.experts_per_rank * world.size, a.experts_per_rank, a.hidden, a.topk
path = os.path.join(tempfile.gettempdir(), f"sy_py_bench_{os.environ.get('SY_JOB_ID', os.getppid())}")
if run_gloo:
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=me, world_size=R)

TMAX = max(token_counts)
if run_sy:
    buf = sy.Buffer(world, num_experts=E, hidden=H, max_tokens_per_rank=TMAX, two_hop=not a.flat)
    prof_buf = sy.Buffer(world, num_experts=E, hidden=H, max_tokens_per_rank=TMAX, two_hop=not a.flat, profile=True)


def switchyard_step(b, x, idx, w):
    out = b.dispatch(x, idx, w, recv_x=False)
    return b.combine(out.expert_x, out.handle, out.recv_topk_weights)


class Gloo:
    """The same exchange with gloo all_to_all_single; a2a_s sums the time inside the calls."""

    def __init__(self, x, idx, w):
        self.x, self.idx, self.w = x, idx, w
        self.in_rank = torch.zeros(x.shape[0], R, dtype=torch.bool)
        self.in_rank.scatter_(1, idx // L, True)
        self.a2a_s = 0.0

    def a2a(self, out, inp, out_split=None, in_split=None):
        t0 = time.perf_counter()
        dist.all_to_all_single(out, inp, out_split, in_split)
        self.a2a_s += time.perf_counter() - t0

    def step(self):
        x, idx, w, T = self.x, self.idx, self.w, self.x.shape[0]
        # Dispatch: pack per destination, exchange counts, then rows and routing.
        order = torch.cat([torch.nonzero(self.in_rank[:, d]).flatten() for d in range(R)])
        sc = self.in_rank.sum(0)
        rc = torch.empty_like(sc)
        self.a2a(rc, sc)
        sc_l, rc_l = sc.tolist(), rc.tolist()
        M = sum(rc_l)
        recv_x = torch.empty(M, H)
        self.a2a(recv_x, x.index_select(0, order), rc_l, sc_l)
        meta = torch.cat([idx.index_select(0, order).float(), w.index_select(0, order)], 1)
        recv_meta = torch.empty(M, 2 * K)
        self.a2a(recv_meta, meta, rc_l, sc_l)
        # Identity experts: each received token weighted by its local slots' gate weights.
        local = (recv_meta[:, :K].long() // L) == me
        wsum = (recv_meta[:, K:] * local).sum(1, keepdim=True)
        back = torch.empty(int(sum(sc_l)), H)
        self.a2a(back, recv_x * wsum, sc_l, rc_l)
        y = torch.zeros(T, H)
        y.index_add_(0, order, back)
        return y


def mean_over_ranks(values):
    t = torch.tensor(values, dtype=torch.float64)
    sy.all_reduce(world, t)
    return (t / R).tolist()


def profile_switchyard(x, idx, w, iters):
    """Where Switchyard's step goes (not timed with the rounds), mean over ranks."""
    world.barrier()
    prof_buf.profile(reset=True)
    t0 = time.perf_counter()
    for _ in range(iters):
        switchyard_step(prof_buf, x, idx, w)
    wall = (time.perf_counter() - t0) / iters
    prof = prof_buf.profile(reset=True)
    parts = [sum(prof[c][f] for c in ("dispatch", "combine")) / iters
             for f in ("convert_in_us", "cxx_us", "exchange_us", "convert_out_us")]
    sy_in, sy_cxx, sy_ex, sy_out, sy_w = mean_over_ranks(parts + [wall * 1e6])
    return dict(step_us=round(sy_w, 1), convert_in_us=round(sy_in, 1), cxx_us=round(sy_cxx, 1),
                cxx_exchange_us=round(sy_ex, 1), cxx_other_us=round(sy_cxx - sy_ex, 1),
                convert_out_us=round(sy_out, 1), python_us=round(sy_w - sy_in - sy_cxx - sy_out, 1))


def profile_gloo(gloo, iters):
    """Where the gloo step goes: inside all_to_all_single or in torch, mean over ranks."""
    world.barrier()
    gloo.a2a_s = 0.0
    t0 = time.perf_counter()
    for _ in range(iters):
        gloo.step()
    wall = (time.perf_counter() - t0) / iters
    gl_a2a, gl_w = mean_over_ranks([gloo.a2a_s / iters * 1e6, wall * 1e6])
    return dict(step_us=round(gl_w, 1), all_to_all_single_us=round(gl_a2a, 1), torch_us=round(gl_w - gl_a2a, 1))


def check_across_jobs(side, T, y):
    """Saves this side's result and compares it with the other side's (an earlier job's)."""
    other = "gloo" if side == "switchyard" else "switchyard"
    torch.save(y, os.path.join(a.check_dir, f"{side}.T{T}.r{me}.pt"))
    other_path = os.path.join(a.check_dir, f"{other}.T{T}.r{me}.pt")
    if not os.path.exists(other_path):
        return False, 0.0
    y_other = torch.load(other_path)
    diff = (y - y_other).abs().max().item() if y.shape == y_other.shape else float("inf")
    assert torch.allclose(y, y_other, rtol=1e-4, atol=1e-4), (side, T, me, diff)
    return True, diff


def measure(T):
    g = torch.Generator().manual_seed(1000 * me + T)
    x = torch.randn(T, H, generator=g)
    idx = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    w = torch.rand(T, K, generator=g)
    gloo = Gloo(x, idx, w) if run_gloo else None
    sides = {}
    if run_sy:
        sides["switchyard"] = lambda: switchyard_step(buf, x, idx, w)
    if run_gloo:
        sides["gloo"] = gloo.step
    y = {name: step() for name, step in sides.items()}  # also the warm-up
    if a.side == "both":
        assert torch.allclose(y["switchyard"], y["gloo"], rtol=1e-4, atol=1e-4), \
            (T, (y["switchyard"] - y["gloo"]).abs().max())
    iters = a.iters or max(2, min(20, 8192 // T))

    wall = {k: [] for k in sides}
    cpu = {k: [] for k in sides}
    faults = {k: [] for k in sides}  # minor page faults per step (getrusage)
    for r in range(a.rounds):
        for name in (("switchyard", "gloo") if r % 2 == 0 else ("gloo", "switchyard")):
            if name not in sides:
                continue
            world.barrier()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(iters):
                sides[name]()
            c1 = time.process_time()
            f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            world.barrier()
            wall[name].append((time.perf_counter() - t0) / iters * 1e6)
            cpu[name].append((c1 - c0) / iters * 1e6)
            faults[name].append((f1 - f0) / iters)
    for name in sides:  # CPU and faults per step: mean over ranks of each round, then the median
        cpu[name] = mean_over_ranks(cpu[name])
        faults[name] = mean_over_ranks(faults[name])
    load = os.getloadavg()[0]

    # Profiling pass (not timed above): where each side's step goes, mean over ranks.
    phases = {}
    if run_sy:
        phases["switchyard"] = profile_switchyard(x, idx, w, iters)
    if run_gloo:
        phases["gloo"] = profile_gloo(gloo, iters)

    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    res = dict(two_hop=buf.uses_two_hop if run_sy else (world.num_nodes > 1 and not a.flat), ranks=R,
               nodes=world.num_nodes, tokens=T, hidden=H, experts=E, topk=K, rounds=a.rounds, iters=iters,
               loadavg_1m=round(load, 2), rounds_us={k: [round(t, 1) for t in v] for k, v in wall.items()},
               phases=phases)
    if a.side != "both":
        checked, diff = check_across_jobs(a.side, T, y[a.side]) if a.check_dir else (False, 0.0)
        checked = mean_over_ranks([1.0 if checked else 0.0])[0] == 1.0  # every rank compared
        res.update(side=a.side, step_us=round(med[a.side], 1), cpu_us=round(med_cpu[a.side], 1),
                   minor_faults=round(statistics.median(faults[a.side]), 1),
                   checked=checked, max_abs_diff=diff)
        return res
    res.update(switchyard_us=round(med["switchyard"], 1), gloo_us=round(med["gloo"], 1),
               speedup=round(med["gloo"] / med["switchyard"], 2),
               switchyard_cpu_us=round(med_cpu["switchyard"], 1), gloo_cpu_us=round(med_cpu["gloo"], 1),
               cpu_ratio=round(med_cpu["gloo"] / med_cpu["switchyard"], 2),
               minor_faults={k: round(statistics.median(v), 1) for k, v in faults.items()})
    return res


for T in token_counts:
    res = measure(T)
    if me == 0:
        if a.json or a.side != "both":
            print(json.dumps(res), flush=True)
        else:
            ph = res["phases"]["switchyard"]
            print(f"dispatch+combine T={T} H={H} E={E} K={K} on {R} ranks / {res['nodes']} nodes"
                  f"{' two-hop' if res['two_hop'] else ''}: switchyard {res['switchyard_us']:.0f} us, gloo "
                  f"{res['gloo_us']:.0f} us, speedup {res['speedup']:.2f}x; CPU/step {res['switchyard_cpu_us']:.0f} vs "
                  f"{res['gloo_cpu_us']:.0f} us; exchange {ph['cxx_exchange_us']:.0f} us of C++ {ph['cxx_us']:.0f} us, "
                  f"binding {ph['convert_in_us'] + ph['convert_out_us']:.0f} us "
                  f"(median of {a.rounds}; load {res['loadavg_1m']:.1f})", flush=True)
world.barrier()
if run_gloo:
    dist.destroy_process_group()
    if me == 0 and os.path.exists(path):
        os.remove(path)
