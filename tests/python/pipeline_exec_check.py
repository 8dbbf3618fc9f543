"""Runs every pipeline schedule kind on 2 ranks with Python stage callbacks
(switchyard.Executor) and checks the gradients against the closed form; a corrupted schedule
is rejected by verify_schedule.

Model: a chain of S stages over float64 activations, h_0 = x_mb, h_{s+1} = a_s * h_s, and the
last stage's loss_mb = sum(a_{S-1} * h_{S-1}). So L = prod(a) * sum_mb sum(x_mb) and
dL/da_s = prod_{j != s} a_j * sum_mb sum(x_mb), whatever the schedule's order.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, import_or_skip  # noqa: E402

import_or_skip()
import torch  # noqa: E402
import switchyard as sy  # noqa: E402
from switchyard import errors  # noqa: E402

world = sy.init(timeout_s=30)
check(world.size == 2, "needs 2 ranks")
me, N, MB = world.rank, 6, 4
xs = [torch.arange(N, dtype=torch.float64) * 0.1 + m for m in range(MB)]
total_x = sum(float(x.sum()) for x in xs)


def run(kind):
    s = sy.generate_schedule(kind, 2, MB)
    sy.verify_schedule(s)
    S = s.num_stages
    a = [1.5 - 0.25 * i for i in range(S)]
    stages = sorted({int(act.split()[1][1:]) for act in s.actions(me) if act.split()[0] in ("F", "FB")})
    grads = {st: torch.zeros(1, dtype=torch.float64) for st in stages}
    h, gout = {}, {}
    calls = []

    def forward(stage, mb, inp, out):
        calls.append(("F", stage, mb))
        h[stage, mb] = (xs[mb] if stage == 0 else inp).clone()
        if stage < S - 1:
            out.copy_(a[stage] * h[stage, mb])

    def backward_input(stage, mb, grad_out, grad_in):
        g = torch.ones(N, dtype=torch.float64) if stage == S - 1 else grad_out.clone()
        gout[stage, mb] = g
        if grad_in is not None:
            grad_in.copy_(a[stage] * g)

    def backward_weight(stage, mb):
        grads[stage] += (h[stage, mb] * gout[stage, mb]).sum()

    sy.Executor(world, s, N, forward, backward_input, backward_weight, grads).run()
    for st in stages:
        expect = math.prod(a[j] for j in range(S) if j != st) * total_x
        check(abs(float(grads[st]) - expect) < 1e-9 * abs(expect),
              f"{kind}: rank {me} stage {st}: grad {float(grads[st])} != {expect}")
    check(len(set(calls)) == len(calls), f"{kind}: a (stage, micro-batch) ran forward twice")
    n_fwd = sy.all_reduce(world, torch.tensor([float(len(calls))]))
    check(int(n_fwd.item()) == MB * S, f"{kind}: {int(n_fwd.item())} forwards on the 2 ranks, expected {MB * S}")
    return stages


for kind in sy.schedule_kinds():
    stages = run(kind)
    print(f"rank {me}: {kind} stages {stages} gradients equal the closed form", flush=True)

# A schedule whose text lost its first send no longer verifies (rank 1 waits forever).
text = sy.generate_schedule("1f1b", 2, MB).to_text()
lines = text.splitlines()
bad = "\n".join(l for l in lines if "SEND_ACT s0 m0" not in l) + "\n"
try:
    sy.verify_schedule(sy.Schedule.from_text(bad))
    raise AssertionError("a schedule with a missing send verified")
except errors.InvalidArgument as e:
    check("m0" in str(e), f"verifier message names the micro-batch: {e}")
print(f"rank {me}: pipeline_exec_check passed")
