"""Shared helpers of the Python tests: skip without torch, gloo from the launcher env."""
import os
import sys
import tempfile

SKIP = 77  # ctest SKIP_RETURN_CODE


def import_or_skip():
    """Imports torch and switchyard, or exits 77 (skipped) saying what is missing."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"SKIP: torch not importable with {sys.executable}: {e}")
        sys.exit(SKIP)
    try:
        import switchyard  # noqa: F401
    except ImportError as e:
        print(f"SKIP: switchyard module not built or not on PYTHONPATH: {e}")
        sys.exit(SKIP)


def init_gloo(rank, world_size):
    """torch.distributed (gloo) over the same ranks (rank and size from switchyard.init()).

    The rendezvous is a file store named after sy-run's SY_JOB_ID instead of a derived
    MASTER_ADDR/MASTER_PORT, so concurrent jobs never race for a port. Returns its path.
    """
    import torch.distributed as dist
    job = os.environ.get("SY_JOB_ID", str(os.getppid()))
    path = os.path.join(tempfile.gettempdir(), f"sy_py_gloo_{job}")
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world_size)
    return path


def check(cond, what):
    if not cond:
        raise AssertionError(what)
