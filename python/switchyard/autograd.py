"""Dispatch and combine as torch.autograd functions, for MoE layers written in PyTorch.

    expert_x, route = switchyard.autograd.dispatch(buf, x, topk_idx, topk_weights)
    expert_out = <per local expert: rows route.expert_slices()[j] of expert_x>
    y = switchyard.autograd.combine(buf, expert_out, route, topk_weights)

Gradients: dispatch backward is Buffer.dispatch_backward (a combine with unit weights over
the same handle); combine backward is Buffer.combine_backward, which gives the gradient of
expert_out and of the gate weights (topk_weights at the source, reduced back from the ranks
that applied them). The gate weights reach combine through dispatch (route carries the
received copy), so pass the same topk_weights tensor to both; its gradient flows through
combine only.

Both calls are collective over the Buffer's group: every rank must run the same forward and
backward sequence (autograd keeps the order when every rank builds the same graph).
Payloads travel as float32 (or bfloat16 when x is bfloat16); float64 inputs are exchanged in
float32 and cast back, so a float64 gradcheck needs eps/atol suited to float32 rounding
(docs/python.md).
"""
import torch


class Route:
    """What dispatch produced: the C++ handle, the received weights and the expert layout."""

    def __init__(self):
        self.output = None  # switchyard.DispatchOutput

    @property
    def handle(self):
        return self.output.handle

    def expert_slices(self):
        """Row range [start, end) of each local expert in expert_x (padding rows included)."""
        off = self.output.expert_offsets.tolist()
        return [(off[j], off[j + 1]) for j in range(len(off) - 1)]


def _payload(t):
    return t.detach().float().contiguous() if t.dtype not in (torch.float32, torch.bfloat16) else t.detach().contiguous()


class _Dispatch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, buf, topk_idx, topk_weights, expert_alignment, route):
        w = None if topk_weights is None else topk_weights.detach().float().contiguous()
        route.output = buf.dispatch(_payload(x), topk_idx, w, expert_alignment, recv_x=False)
        ctx.buf, ctx.route, ctx.dtype = buf, route, x.dtype
        return route.output.expert_x.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_expert_x):
        g = ctx.buf.dispatch_backward(_payload(grad_expert_x), ctx.route.handle)
        return g.to(ctx.dtype), None, None, None, None, None


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, expert_out, topk_weights, buf, route):
        eo = _payload(expert_out)
        recv_w = route.output.recv_topk_weights if topk_weights is not None else None
        y = buf.combine(eo, route.handle, recv_w)
        ctx.save_for_backward(eo)
        ctx.buf, ctx.route, ctx.recv_w = buf, route, recv_w
        ctx.dtype = expert_out.dtype
        ctx.w_dtype = None if topk_weights is None else topk_weights.dtype
        return y.to(expert_out.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        (eo,) = ctx.saved_tensors
        dy = grad_y.detach().to(eo.dtype).contiguous()
        g_out, _, g_w = ctx.buf.combine_backward(dy, ctx.route.handle, eo, ctx.recv_w)
        g_w = None if ctx.w_dtype is None else g_w.to(ctx.w_dtype)
        return g_out.to(ctx.dtype), g_w, None, None


def dispatch(buf, x, topk_idx, topk_weights=None, expert_alignment=1):
    """x [T, H] -> (expert_x [P, H] expert-major, Route). Differentiable in x."""
    route = Route()
    expert_x = _Dispatch.apply(x, buf, topk_idx, topk_weights, expert_alignment, route)
    return expert_x, route


def combine(buf, expert_out, route, topk_weights=None):
    """expert_out [P, H] -> y [T, H] = sum_k w[t, k] * out of token t's k-th expert.

    Differentiable in expert_out and topk_weights ([T, K], the tensor given to dispatch);
    topk_weights None means unit weights.
    """
    return _Combine.apply(expert_out, topk_weights, buf, route)
