"""Switchyard for PyTorch programs: communicators, MoE dispatch/combine, pipeline schedules.

A thin layer over the C++ libraries (module switchyard._C); nothing here re-implements them.

    import switchyard as sy
    world = sy.init()                                   # sy-run / torchrun / mpirun / srun env
    ep, pp, dp = sy.make_parallel_groups(world, ep=4, pp=1, dp=1)
    buf = sy.Buffer(ep, num_experts=8, hidden=64, max_tokens_per_rank=128)
    out = buf.dispatch(x, topk_idx, topk_weights)       # DispatchOutput (tensors + handle)
    y = buf.combine(expert_out, out.handle, out.recv_topk_weights)

For training use switchyard.autograd (dispatch/combine with gradients). Errors from C++ are
switchyard.errors classes (InvalidArgument is a ValueError, Timeout a TimeoutError).
CPU tensors only for now. See docs/python.md.
"""
from . import errors
from ._C import (AsyncCombine, AsyncDispatch, Buffer, Communicator, DispatchOutput, Handle, Schedule,
                 closed_form_bubble, fp8_dequantize, fp8_quantize, launch_env, make_parallel_groups, schedule_kinds)
from ._C import init as _init
from ._C import generate_schedule, simulate_schedule, verify_schedule
from . import _C

__all__ = ["errors", "init", "launch_env", "Communicator", "make_parallel_groups", "from_process_group",
           "all_reduce", "Buffer", "Handle", "DispatchOutput", "AsyncDispatch", "AsyncCombine",
           "Schedule", "schedule_kinds", "generate_schedule", "verify_schedule", "simulate_schedule",
           "closed_form_bubble", "Executor", "fp8_quantize", "fp8_dequantize"]

_world = None


def init(timeout_s: float = 60.0) -> Communicator:
    """World communicator from the launcher environment. Collective; cached per process."""
    global _world
    if _world is None:
        _world = _init(timeout_s)
    return _world


def from_process_group(world: Communicator, group=None):
    """A Switchyard communicator over the ranks of a torch.distributed group.

    Collective over `world` (every world rank calls it, members and others). The group's
    ranks are global torch.distributed ranks, which must equal the world ranks of `world`
    (both come from the same launcher). Returns None on ranks outside the group. Ranks keep
    the group's order.
    """
    import torch.distributed as dist
    if group is None:
        ranks = list(range(dist.get_world_size()))
    elif group == dist.GroupMember.NON_GROUP_MEMBER:
        ranks = []
    else:
        ranks = dist.get_process_group_ranks(group) if hasattr(dist, "get_process_group_ranks") \
            else list(dist.distributed_c10d._pg_group_ranks[group].keys())
    me = world.rank
    color = 0 if me in ranks else -1
    key = ranks.index(me) if me in ranks else 0
    return world.split(color, key)


_DTYPES = {"torch.float32": "float32", "torch.float64": "float64", "torch.int64": "int64",
           "torch.int32": "int32", "torch.bfloat16": "bfloat16", "torch.int8": "int8", "torch.uint8": "uint8"}


def _raw(t, what):
    if not t.is_contiguous() or t.device.type != "cpu":
        raise errors.InvalidArgument(f"{what}: needs a contiguous CPU tensor")
    name = _DTYPES.get(str(t.dtype))
    if name is None:
        raise errors.InvalidArgument(f"{what}: dtype {t.dtype} is not supported")
    return t.data_ptr(), t.numel(), name


def all_reduce(comm: Communicator, tensor, op: str = "sum"):
    """In-place all-reduce of a contiguous CPU tensor over comm (bitwise identical on all ranks)."""
    ptr, n, dtype = _raw(tensor, "all_reduce")
    comm._all_reduce(ptr, n, dtype, op)
    return tensor


def broadcast(comm: Communicator, tensor, root: int = 0):
    """In-place broadcast of a contiguous CPU tensor from root."""
    ptr, n, dtype = _raw(tensor, "broadcast")
    comm._broadcast(ptr, n, dtype, root)
    return tensor


class Executor:
    """Runs this rank's part of a pipeline Schedule with Python stage callbacks.

    forward(stage, mb, inp, out), backward_input(stage, mb, grad_out, grad_in) receive 1-D
    float64 torch tensors of activation_elems that alias the executor's buffers (None where
    the C++ side passes nullptr: inp at stage 0, grad_out at the last stage, grad_in at stage 0);
    write outputs in place. backward_weight(stage, mb) adds into gradients[stage], a contiguous
    float64 tensor per stage this rank holds (summed over DualPipe copies by REDUCE).
    Construction is collective over comm; run() executes one step (blocking).
    """

    def __init__(self, comm, schedule, activation_elems, forward, backward_input, backward_weight, gradients):
        import torch

        def view(mv):
            return None if mv is None else torch.frombuffer(mv, dtype=torch.float64)

        self._gradients = dict(gradients)  # keeps the buffers alive
        grads = {}
        for stage, t in self._gradients.items():
            if t.dtype != torch.float64 or not t.is_contiguous():
                raise errors.InvalidArgument(f"Executor: gradients[{stage}] must be a contiguous float64 tensor")
            grads[int(stage)] = (t.data_ptr(), t.numel())
        self._impl = _C._Executor(comm, schedule, activation_elems,
                                  lambda s, m, i, o: forward(s, m, view(i), view(o)),
                                  lambda s, m, g, gi: backward_input(s, m, view(g), view(gi)),
                                  backward_weight, grads)

    def run(self):
        self._impl.run()
