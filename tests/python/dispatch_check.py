"""Dispatch and combine from Python against a torch.distributed (gloo) all_to_all_single
reference, on every rank of a sy-run job (4 ranks over 2 virtual nodes in ctest).

Checks: get_dispatch_layout against naive counting; dispatch (float32 and bfloat16, masked
slots, uneven token counts) equals the gloo exchange bit for bit, received order (source rank,
source token); the expert-major rows; combine equals the gloo reduction; cached handles; async
handles report completion (and not before a late peer sent); FP8 dispatch ((codes, scales)
pairs) bit for bit and against the dequantised float32 path; low-latency dispatch/combine;
gradcheck (float64 inputs) through dispatch and combine; recycled result memory never
aliases a result the caller still holds.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, import_or_skip, init_gloo  # noqa: E402

import_or_skip()
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import switchyard as sy  # noqa: E402
from switchyard import autograd as sya  # noqa: E402
from switchyard import errors  # noqa: E402

world = sy.init(timeout_s=30)
R, me = world.size, world.rank
store = init_gloo(me, R)
E, H, K = 2 * R, 24, 3
L = E // R
TMAX = 16


def routing(seed, T):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)]) if T else torch.zeros(0, K, dtype=torch.long)
    mask = torch.rand(T, K, generator=g) < 0.2
    idx = idx.masked_fill(mask, -1)
    w = torch.rand(T, K, generator=g)
    return idx, w


def gloo_a2a(rows, send_counts):
    """Exchanges rows [N, ...] split by send_counts[d] with all_to_all_single; returns recv, recv_counts."""
    sc = torch.tensor(send_counts, dtype=torch.long)
    rc = torch.empty(R, dtype=torch.long)
    dist.all_to_all_single(rc, sc)
    out = torch.empty((int(rc.sum()),) + tuple(rows.shape[1:]), dtype=rows.dtype)
    dist.all_to_all_single(out, rows.contiguous(), rc.tolist(), sc.tolist())
    return out, rc.tolist()


def reference_dispatch(x, idx, w):
    """Per destination rank, the tokens with an expert there (ascending), via gloo."""
    order, counts = [], []
    for d in range(R):
        toks = [t for t in range(x.shape[0]) if any(0 <= e < E and e // L == d for e in idx[t].tolist())]
        order += toks
        counts.append(len(toks))
    order_t = torch.tensor(order, dtype=torch.long)
    xv = x.view(torch.float16) if x.dtype == torch.bfloat16 else x  # gloo has no bf16: move the bits
    recv_x, rc = gloo_a2a(xv[order_t], counts)
    recv_idx, _ = gloo_a2a(idx[order_t], counts)
    recv_w, _ = gloo_a2a(w[order_t], counts)
    src_tok, _ = gloo_a2a(order_t, counts)
    src_rank = torch.repeat_interleave(torch.arange(R), torch.tensor(rc))
    if x.dtype == torch.bfloat16:
        recv_x = recv_x.view(torch.bfloat16)
    local = torch.where((recv_idx >= 0) & (recv_idx // L == me), recv_idx % L, torch.full_like(recv_idx, -1))
    # Weights arrive for every slot (as sent); combine applies only the local ones.
    return dict(recv_x=recv_x, local=local, w=recv_w, src_rank=src_rank, src_tok=src_tok, counts=counts,
                order=order_t, rc=rc)


def expert_fn(rows, j):
    """A different affine map per (global) expert, applied to float32 rows."""
    ge = me * L + j
    return rows.float() * (1.0 + 0.25 * ge) + 0.01 * ge


def reference_combine(ref, T):
    """y[t] = sum over ranks and local slots of w * expert_fn(x[t]); partial sums back via gloo."""
    M = ref["recv_x"].shape[0]
    part = torch.zeros(M, H)
    for m in range(M):
        for k in range(K):
            j = int(ref["local"][m, k])
            if j >= 0:
                part[m] += ref["w"][m, k] * expert_fn(ref["recv_x"][m:m + 1], j)[0]
    back, _ = gloo_a2a(part, ref["rc"])  # back to the sources, in their send order
    y = torch.zeros(T, H)
    y.index_add_(0, ref["order"], back)
    return y


# Sub-groups: EP/DP layout (world rank = dp_index * ep + ep_index here), and a communicator
# over the ranks of a torch.distributed group.
ep, pp, dp = sy.make_parallel_groups(world, ep=2, pp=1, dp=R // 2)
check(ep.world_ranks == [me // 2 * 2, me // 2 * 2 + 1], f"ep group {ep.world_ranks}")
check(dp.world_ranks == list(range(me % 2, R, 2)), f"dp group {dp.world_ranks}")
check(pp.size == 1, "pp group")
members = [0, R - 1]
sub = sy.from_process_group(world, dist.new_group(members))
if me in members:
    check(sub is not None and sub.world_ranks == members, f"from_process_group: {sub}")
    t = torch.tensor([float(me)])
    check(sy.all_reduce(sub, t).item() == float(sum(members)), "all_reduce over the sub-group")
else:
    check(sub is None, "non-member got a communicator")

buf = sy.Buffer(world, num_experts=E, hidden=H, max_tokens_per_rank=TMAX)
check(buf.num_local_experts == L and buf.num_ranks == R, "buffer geometry")

for it, dtype in enumerate([torch.float32, torch.bfloat16]):
    T = 5 + 3 * me + it
    idx, w = routing(100 * it + me, T)
    x = torch.randn(T, H, generator=torch.Generator().manual_seed(7 + me)).to(dtype)

    # Layout against naive counting.
    per_rank, per_node, per_expert, in_rank = buf.get_dispatch_layout(idx)
    naive_in = torch.zeros(T, R, dtype=torch.bool)
    naive_exp = torch.zeros(E, dtype=torch.long)
    for t in range(T):
        for e in idx[t].tolist():
            if e >= 0:
                naive_in[t, e // L] = True
                naive_exp[e] += 1
    check(torch.equal(in_rank, naive_in), "is_token_in_rank")
    check(torch.equal(per_rank, naive_in.sum(0)), "num_tokens_per_rank")
    check(torch.equal(per_expert, naive_exp), "num_tokens_per_expert")
    check(int(per_node.sum()) >= int(naive_in.any(1).sum()), "num_tokens_per_node")

    out = buf.dispatch(x, idx, w)
    ref = reference_dispatch(x, idx, w)
    check(torch.equal(out.recv_x, ref["recv_x"]), f"recv_x {dtype}")
    check(torch.equal(out.recv_src_rank.long(), ref["src_rank"]), "recv_src_rank")
    check(torch.equal(out.recv_src_token.long(), ref["src_tok"]), "recv_src_token")
    check(torch.equal(out.recv_topk_idx, ref["local"]), "recv_topk_idx")
    check(torch.equal(out.recv_topk_weights, ref["w"]), "recv_topk_weights")
    # Expert-major rows: expert j holds the received tokens that chose it, ascending.
    offs = out.expert_offsets.tolist()
    for j in range(L):
        toks = [m for m in range(ref["local"].shape[0]) if j in ref["local"][m].tolist()]
        rows = out.expert_row_token[offs[j]:offs[j + 1]].tolist()
        check(rows == toks, f"expert {j} rows {rows} != {toks}")
        check(torch.equal(out.expert_x[offs[j]:offs[j + 1]], ref["recv_x"][toks]), f"expert_x of expert {j}")
        check(int(out.num_recv_tokens_per_expert[j]) == len(toks), "num_recv_tokens_per_expert")

    expert_out = torch.cat([expert_fn(out.expert_x[a:b], j) for j, (a, b) in
                            enumerate(zip(offs[:-1], offs[1:]))]).to(dtype)
    y = buf.combine(expert_out, out.handle, out.recv_topk_weights)
    y_ref = reference_combine(ref, T)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    check(torch.allclose(y.float(), y_ref, rtol=tol, atol=tol), f"combine {dtype}: {(y.float() - y_ref).abs().max()}")

    # Cached handle: same routing, new payload, no layout.
    x2 = (x.float() * 2 - 1).to(dtype)
    out2 = buf.dispatch(x2, handle=out.handle)
    ref2 = reference_dispatch(x2, idx, w)
    check(torch.equal(out2.recv_x, ref2["recv_x"]), "cached dispatch recv_x")

    # Async: poll until done, then the same result as the blocking call.
    pending = buf.dispatch(x, idx, w, async_op=True)
    deadline = time.time() + 20
    while not pending.done():
        check(time.time() < deadline, "async dispatch never reported done")
        time.sleep(0.001)
    out3 = pending.wait()
    check(torch.equal(out3.expert_x, out.expert_x), "async dispatch")
    pending = buf.combine(expert_out, out3.handle, out3.recv_topk_weights, async_op=True)
    while not pending.done():
        check(time.time() < deadline, "async combine never reported done")
        time.sleep(0.001)
    check(torch.equal(pending.wait(), y), "async combine")

# Result arrays are recycled only once dropped (the Buffer's ResultPool): results still held
# (and views of them) keep their values while later calls run, later calls write into the
# memory of dropped results (same data_ptr) and still equal the gloo reference, and padding
# rows (expert_alignment 4) are zero although the reused memory held other rows before.
T = 9 + me
idx, w = routing(900 + me, T)
x = torch.randn(T, H, generator=torch.Generator().manual_seed(21 + me))
held = buf.dispatch(x, idx, w, expert_alignment=4)
y_held = buf.combine(held.expert_x, held.handle, held.recv_topk_weights)
held_x, held_ex, held_y, held_view = held.recv_x.clone(), held.expert_x.clone(), y_held.clone(), held.expert_x[1:]
ptrs = []
for i in range(4):
    idx_i, w_i = routing(910 + 10 * i + me, T)
    x_i = torch.randn(T, H, generator=torch.Generator().manual_seed(31 + 10 * i + me))
    o = buf.dispatch(x_i, idx_i, w_i, expert_alignment=1 + 3 * (i % 2))
    ref_i = reference_dispatch(x_i, idx_i, w_i)
    check(torch.equal(o.recv_x, ref_i["recv_x"]), f"recycled recv_x, call {i}")
    offs = o.expert_offsets.tolist()
    for j in range(L):
        toks = [m for m in range(ref_i["local"].shape[0]) if j in ref_i["local"][m].tolist()]
        block = o.expert_x[offs[j]:offs[j + 1]]
        check(torch.equal(block[:len(toks)], ref_i["recv_x"][toks]), f"recycled expert_x of expert {j}, call {i}")
        check(bool((block[len(toks):] == 0).all()), f"recycled padding rows not zero, call {i}")
    y_i = buf.combine(o.expert_x, o.handle, o.recv_topk_weights)
    want = (w_i * (idx_i >= 0)).sum(1, keepdim=True) * x_i  # identity experts
    check(torch.allclose(y_i, want, rtol=1e-5, atol=1e-5), f"recycled combine, call {i}")
    ptrs.append((o.expert_x.data_ptr(), y_i.data_ptr()))
    del o, y_i, block
check(len(set(ptrs[1:])) == 1, f"dropped results were not reused: {ptrs}")
check(held.expert_x.data_ptr() not in [p[0] for p in ptrs] and y_held.data_ptr() not in [p[1] for p in ptrs],
      "a held result's memory was handed out again")
check(torch.equal(held.recv_x, held_x) and torch.equal(held.expert_x, held_ex) and torch.equal(y_held, held_y)
      and torch.equal(held_view, held_ex[1:]), "a held result changed while later calls ran")

# Async handles report completion honestly: rank 0 posts, sees not-done while the others have
# not joined (they wait on a gloo barrier that rank 0 enters only after its check), then waits.
T = 4
idx, w = routing(700 + me, T)
x = torch.randn(T, H, generator=torch.Generator().manual_seed(13 + me))
if me == 0:
    pending = buf.dispatch(x, idx, w, async_op=True)
    check(not pending.done(), "async dispatch reported done before the peers sent anything")
    dist.barrier()
else:
    dist.barrier()
    pending = buf.dispatch(x, idx, w, async_op=True)
out_async = pending.wait()
check(torch.equal(out_async.recv_x, reference_dispatch(x, idx, w)["recv_x"]), "async dispatch after a late peer")


# FP8: x as (E4M3 codes uint8, float32 scales per 128 channels), as DeepEP takes it. The
# codes and scales arrive bit for bit (gloo reference), and dequantising the received rows
# equals a float32 dispatch of the dequantised input. E4M3 decoded here in closed form.
def e4m3_decode(codes):
    c = codes.long()
    sign = 1.0 - 2.0 * ((c >> 7) & 1).double()
    e, m = (c >> 3) & 15, (c & 7).double()
    mag = torch.where(e > 0, (1.0 + m / 8.0) * torch.pow(2.0, e.double() - 7.0), m / 8.0 * 2.0 ** -6)
    return sign * mag


def dequant(codes, scales):
    tiles = torch.repeat_interleave(scales.double(), 128, dim=1)[:, :codes.shape[1]]
    return (e4m3_decode(codes) * tiles).float()


HF = 160  # two scale tiles, the last one 32 channels wide
fbuf = sy.Buffer(world, num_experts=E, hidden=HF, max_tokens_per_rank=TMAX)
T = 7 + me
idx, w = routing(800 + me, T)
gen = torch.Generator().manual_seed(17 + me)
codes = torch.randint(0, 256, (T, HF), generator=gen, dtype=torch.uint8)
codes[(codes & 0x7F) == 0x7F] = 0x3C  # no NaN codes
scales = torch.rand(T, 2, generator=gen) * 4 + 0.01
out8 = fbuf.dispatch((codes, scales), idx, w)
ref8 = reference_dispatch(codes, idx, w)
ref_sc = reference_dispatch(scales, idx, w)["recv_x"]
check(out8.recv_x.dtype == torch.uint8 and torch.equal(out8.recv_x, ref8["recv_x"]), "FP8 recv_x codes")
check(torch.equal(out8.recv_x_scales, ref_sc), "FP8 recv_x_scales")
outf = fbuf.dispatch(dequant(codes, scales), idx, w)
check(outf.recv_x_scales is None and outf.expert_x_scales is None, "no scales without FP8")
check(torch.equal(dequant(out8.recv_x, out8.recv_x_scales), outf.recv_x), "FP8 dequantised recv_x")
check(torch.equal(dequant(out8.expert_x, out8.expert_x_scales), outf.expert_x), "FP8 dequantised expert_x")
check(torch.equal(out8.expert_offsets, outf.expert_offsets), "FP8 expert layout")
cached8 = fbuf.dispatch([codes, scales], handle=out8.handle)
check(torch.equal(cached8.expert_x, out8.expert_x) and torch.equal(cached8.expert_x_scales, out8.expert_x_scales),
      "FP8 cached dispatch")
# The bindings' quantizer (C++ 1x128 tiles) against the closed-form decode: per-tile scale
# amax / 448 and round-to-nearest within half an E4M3 step.
xq = torch.randn(T, HF, generator=gen) * 3
q, sc = sy.fp8_quantize(xq)
amax = torch.stack([xq[:, :128].abs().amax(1), xq[:, 128:].abs().amax(1)], 1)
check(torch.allclose(sc, amax / 448, rtol=1e-6), "fp8_quantize scales")
check(torch.equal(sy.fp8_dequantize(q, sc), dequant(q, sc)), "fp8_dequantize equals the closed-form decode")
err = (dequant(q, sc) - xq).abs()
bound = torch.repeat_interleave(sc, 128, dim=1)[:, :HF] * torch.maximum(xq.abs() / torch.repeat_interleave(sc, 128, dim=1)[:, :HF] / 16, torch.full_like(xq, 2.0 ** -10))
check(bool((err <= bound * 1.0001).all()), f"fp8_quantize error {float((err - bound).max())} above half a step")
for bad, what in (((codes.float(), scales), "uint8"), ((codes, scales[:, :1]), "scales have shape"),
                  ((codes, scales.double()), "float32")):
    try:
        fbuf.dispatch(bad, idx, w)
        raise AssertionError(f"no error for bad FP8 input ({what})")
    except errors.InvalidArgument as e:
        check(what in str(e), f"FP8 error names the problem: {e}")
world.barrier()

# Low-latency mode (BF16 payload, no FP8 cast): received rows and counts against the gloo
# reference, and combine of an identity expert = sum_k w_k * x (BF16 tolerance).
ll = sy.Buffer(world, num_experts=E, hidden=H, max_tokens_per_rank=TMAX, low_latency_max_tokens=8)
T = 6
idx, w = routing(900 + me, T)
x = torch.randn(T, H, generator=torch.Generator().manual_seed(11 + me)).to(torch.bfloat16)
view = ll.low_latency_dispatch(x, idx, w, use_fp8=False)
ref = reference_dispatch(x, idx, w)
for j in range(L):
    ms = [m for m in range(ref["local"].shape[0]) if j in ref["local"][m].tolist()]
    n = int(view["count"][j])
    check(n == len(ms), f"low-latency count of expert {j}: {n} != {len(ms)}")
    got = {(int(view["src_rank"][j, s]), int(view["src_token"][j, s])): view["x"][j, s] for s in range(n)}
    for m in ms:
        key = (int(ref["src_rank"][m]), int(ref["src_tok"][m]))
        check(key in got and torch.equal(got[key], ref["recv_x"][m]), f"low-latency row {key} of expert {j}")
# Views of the receive area (copy=False, as DeepEP returns them) hold the same rows as the
# copies (slot order within an expert may differ between calls: slots are claimed in
# arrival order).
views = ll.low_latency_dispatch(x, idx, w, use_fp8=False, copy=False)
check(torch.equal(views["count"], view["count"]), "low-latency view counts")


def ll_rows(v, j):
    n = int(v["count"][j])
    return {(int(v["src_rank"][j, s]), int(v["src_token"][j, s])): v["x"][j, s].clone() for s in range(n)}


for j in range(L):
    a_rows, b_rows = ll_rows(views, j), ll_rows(view, j)
    check(a_rows.keys() == b_rows.keys() and all(torch.equal(a_rows[k], b_rows[k]) for k in a_rows),
          f"low-latency view rows of expert {j}")
try:
    ll.low_latency_combine(view["x"], 9)
    raise AssertionError("no error for num_tokens above low_latency_max_tokens")
except errors.InvalidArgument as e:
    check("low_latency_max_tokens" in str(e), f"num_tokens message: {e}")
y = ll.low_latency_combine(views["x"].clone(), T)  # combine takes the layout of the latest dispatch
w_eff = torch.where(idx >= 0, w, torch.zeros_like(w)).sum(1, keepdim=True)
check(torch.allclose(y.float(), w_eff * x.float(), rtol=2e-2, atol=2e-2), "low-latency combine")

# gradcheck (float64 inputs; payloads travel in float32, hence eps 1e-3 and atol 1e-3).
T = 3
idx, _ = routing(500 + me, T)
xg = torch.randn(T, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3 + me)).requires_grad_()
wg = torch.rand(T, K, dtype=torch.float64, generator=torch.Generator().manual_seed(5 + me)).requires_grad_()
gbuf = sy.Buffer(world, num_experts=E, hidden=4, max_tokens_per_rank=TMAX)


def moe(x_, w_):
    ex, route = sya.dispatch(gbuf, x_, idx, w_)
    scale = torch.ones(ex.shape[0], 1, dtype=ex.dtype)
    for j, (a, b) in enumerate(route.expert_slices()):
        scale[a:b] = 1.0 + 0.5 * (me * L + j)
    return sya.combine(gbuf, torch.tanh(ex) * scale, route, w_)


check(torch.autograd.gradcheck(moe, (xg, wg), eps=1e-3, atol=1e-3, rtol=1e-3), "gradcheck")

world.barrier()
dist.destroy_process_group()
if me == 0 and os.path.exists(store):
    os.remove(store)
print(f"rank {me}: dispatch_check passed")
