"""Runs a 1F1B pipeline Schedule on 2 ranks with Python stage callbacks (switchyard.Executor)
and checks the gradients against the closed form.

Stage 0: out = a0 * x_mb (elementwise); stage 1: loss_mb = sum(a1 * in). So
dL/da1 = sum_mb sum(a0 * x_mb) and dL/da0 = sum_mb a1 * sum(x_mb).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, import_or_skip  # noqa: E402

import_or_skip()
import torch  # noqa: E402
import switchyard as sy  # noqa: E402

world = sy.init(timeout_s=30)
check(world.size == 2, "needs 2 ranks")
me, N, MB = world.rank, 6, 4
a = [1.5, -0.75]
xs = [torch.arange(N, dtype=torch.float64) * 0.1 + m for m in range(MB)]
grads = {me: torch.zeros(1, dtype=torch.float64)}
saved = {}
calls = []


def forward(stage, mb, inp, out):
    calls.append(("F", stage, mb))
    if stage == 0:
        out.copy_(a[0] * xs[mb])
    else:
        saved[mb] = inp.clone()


def backward_input(stage, mb, grad_out, grad_in):
    calls.append(("B", stage, mb))
    if stage == 1:
        grad_in.fill_(a[1])
    else:
        saved[mb] = grad_out.clone()


def backward_weight(stage, mb):
    if stage == 1:
        grads[1] += saved[mb].sum()
    else:
        grads[0] += (saved[mb] * xs[mb]).sum()


s = sy.generate_schedule("1f1b", 2, MB)
sy.verify_schedule(s)
ex = sy.Executor(world, s, N, forward, backward_input, backward_weight, grads)
ex.run()
expect = sum(float((a[0] * x).sum()) for x in xs) if me == 1 else sum(a[1] * float(x.sum()) for x in xs)
check(abs(float(grads[me]) - expect) < 1e-9, f"rank {me}: grad {float(grads[me])} != {expect}")
check(len([c for c in calls if c[0] == "F"]) == MB, "one forward per micro-batch")
print(f"rank {me}: pipeline_exec_check passed")
