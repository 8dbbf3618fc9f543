"""A small PyTorch MoE layer using Switchyard for expert parallelism trains to the same losses
as the same model in one process (the reference, computed by every rank without any
communication).

Model: gate = Linear(D, E) (replicated, gradients all-reduced with switchyard.all_reduce),
top-k of the softmax as gate weights, expert e = tanh(x @ W_e) on rank e // (E / R),
y = x + sum_k w_k * expert_k(x); loss = mean over ranks of the rank's MSE to a target. SGD.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, import_or_skip  # noqa: E402

import_or_skip()
import torch  # noqa: E402
import switchyard as sy  # noqa: E402
from switchyard import autograd as sya  # noqa: E402

world = sy.init(timeout_s=30)
R, me = world.size, world.rank
D, E, K, T, STEPS, LR = 16, 2 * R, 2, 8, 4, 0.5
L = E // R

g = torch.Generator().manual_seed(1234)
gate0 = torch.randn(E, D, generator=g) * 0.3
experts0 = torch.randn(E, D, D, generator=g) * (1.0 / D ** 0.5)
xs = [torch.randn(T, D, generator=g) for _ in range(R)]
targets = [torch.randn(T, D, generator=g) * 0.5 for _ in range(R)]


def route(gate, x):
    probs = torch.softmax(x @ gate.t(), dim=-1)
    w, idx = probs.topk(K, dim=-1)
    return idx, w


# ---- one process: every expert local ----
gate = gate0.clone().requires_grad_()
experts = experts0.clone().requires_grad_()
ref_losses = []
for step in range(STEPS):
    total = 0
    for r in range(R):
        idx, w = route(gate, xs[r])
        y = xs[r].clone()
        for k in range(K):
            out = torch.tanh(torch.bmm(xs[r].unsqueeze(1), experts[idx[:, k]]).squeeze(1))
            y = y + w[:, k:k + 1] * out
        total = total + ((y - targets[r]) ** 2).mean()
    loss = total / R
    ref_losses.append(loss.item())
    gate.grad = experts.grad = None
    loss.backward()
    with torch.no_grad():
        gate -= LR * gate.grad
        experts -= LR * experts.grad
ref_experts = experts.detach()

# ---- expert parallel over the world with Switchyard ----
buf = sy.Buffer(world, num_experts=E, hidden=D, max_tokens_per_rank=T)
gate = gate0.clone().requires_grad_()
mine = experts0[me * L:(me + 1) * L].clone().requires_grad_()
losses = []
for step in range(STEPS):
    x = xs[me]
    idx, w = route(gate, x)
    expert_x, rt = sya.dispatch(buf, x, idx, w)
    outs = [torch.tanh(expert_x[a:b] @ mine[j]) for j, (a, b) in enumerate(rt.expert_slices())]
    expert_out = torch.cat(outs) if outs else expert_x
    y = x + sya.combine(buf, expert_out, rt, w)
    loss = ((y - targets[me]) ** 2).mean() / R
    gate.grad = mine.grad = None
    loss.backward()
    total = sy.all_reduce(world, loss.detach().clone().reshape(1))
    losses.append(total.item())
    sy.all_reduce(world, gate.grad)  # replicated parameter: sum of the ranks' contributions
    with torch.no_grad():
        gate -= LR * gate.grad
        mine -= LR * mine.grad

for s, (a, b) in enumerate(zip(losses, ref_losses)):
    check(abs(a - b) <= 1e-5 * max(1.0, abs(b)), f"step {s}: loss {a} != one-process {b}")
check(ref_losses[-1] < ref_losses[0], f"loss did not go down: {ref_losses}")
check(torch.allclose(mine.detach(), ref_experts[me * L:(me + 1) * L], rtol=1e-4, atol=1e-5), "expert weights")
print(f"rank {me}: moe_train passed, losses {['%.6f' % v for v in losses]}")
