"""Single process: C++ errors arrive as Python exceptions with the same message, and the
pipeline library from Python (generate, verify, simulate against the closed-form bubble).

The "same message" reference is independent of the bindings: the C++ tool sy-pipe-sim prints
the error of the same bad request on stderr, and a world-size-2 rendezvous with one process
must end in Timeout (a TimeoutError) after the requested time.
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, import_or_skip  # noqa: E402

import_or_skip()
import torch  # noqa: E402
import switchyard as sy  # noqa: E402
from switchyard import errors  # noqa: E402

bin_dir = sys.argv[1] if len(sys.argv) > 1 else ""

# 1. Bad schedule name: the Python exception text is what the C++ tool prints.
try:
    sy.generate_schedule("bogus", 4, 8)
    raise AssertionError("no exception for a bad schedule name")
except errors.InvalidArgument as e:
    check(isinstance(e, ValueError), "InvalidArgument is a ValueError")
    check(str(e).startswith(e.code + ": ") and e.message in str(e) and e.message.startswith("unknown schedule"),
          f"message layout: {e!r}")
    if bin_dir:
        p = subprocess.run([os.path.join(bin_dir, "sy-pipe-sim"), "--schedule", "bogus"], capture_output=True, text=True)
        check(p.returncode != 0 and e.message in p.stderr, f"tool says {p.stderr!r}, Python says {e.message!r}")

# 2. A bad dispatch argument (single-rank world) names the argument.
world = sy.init(timeout_s=5)
check(world.size == 1, "single process world")
buf = sy.Buffer(world, num_experts=4, hidden=8, max_tokens_per_rank=4)
x = torch.zeros(2, 8)
try:
    buf.dispatch(x, torch.tensor([[0, 9], [1, 2]]))
    raise AssertionError("no exception for expert 9 of 4")
except ValueError as e:
    check(isinstance(e, errors.InvalidArgument) and "9" in e.message, f"bad expert: {e}")
try:
    buf.dispatch(torch.zeros(2, 8, dtype=torch.float64), torch.tensor([[0, 1], [1, 2]]))
    raise AssertionError("no exception for float64")
except errors.InvalidArgument as e:
    check("float64" in str(e) or "Double" in str(e), f"dtype message: {e}")
for bad, what in (("not a tensor", "dispatch: x is a str, expected a torch.Tensor"),
                  ((x, 1.0), "dispatch: x scales (FP8) is a float, expected a torch.Tensor"),
                  ((x, x, x), "(codes, scales) for FP8, got 3 items")):
    try:
        buf.dispatch(bad, torch.tensor([[0, 1], [1, 2]]))
        raise AssertionError(f"no exception for x = {bad!r}")
    except errors.InvalidArgument as e:
        check(what in str(e), f"bad x message: {e}")

# 3. Timeout: world size 2, only this process arrives.
env = dict(os.environ, SY_RANK="0", SY_WORLD_SIZE="2", SY_LOCAL_RANK="0", SY_LOCAL_SIZE="2",
           SY_TOKEN="t", SY_RENDEZVOUS="file:" + os.path.join(tempfile.mkdtemp(), "rdzv"), SY_JOB_ID="sy-py-timeout")
code = ("import switchyard as sy, switchyard.errors as er\n"
        "try:\n    sy.init(timeout_s=1.0)\nexcept TimeoutError as e:\n"
        "    assert isinstance(e, er.Timeout), type(e)\n    print('TIMEOUT', e.message)\n")
t0 = time.time()
p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
check("TIMEOUT" in p.stdout, f"no Timeout: rc {p.returncode} {p.stdout!r} {p.stderr[-400:]!r}")
check(time.time() - t0 < 20, "timeout took too long")

# 4. Pipeline: every generator verifies; simulated bubble equals the closed form.
for kind in sy.schedule_kinds():
    n_mb = 8 if kind != "dualpipe" else 8
    s = sy.generate_schedule(kind, 4, n_mb)
    rep = sy.verify_schedule(s)
    check(len(rep["peak_activations"]) == s.num_ranks, f"{kind}: peaks")
    sim = sy.simulate_schedule(s, f=1.0, b=2.0, w=1.0)
    cf = sy.closed_form_bubble(kind, 4, 1.0, 2.0, 1.0)
    if cf == cf and kind in ("1f1b", "zb-h1"):  # not NaN, and exact for these two
        check(abs(sim["max_bubble"] - cf) < 1e-9, f"{kind}: bubble {sim['max_bubble']} != closed form {cf}")
s = sy.generate_schedule("1f1b", 4, 8)
check(sy.Schedule.from_text(s.to_text()).actions(2) == s.actions(2), "text round trip")
check(s.actions(0)[0].startswith("F s0 m0"), f"first action {s.actions(0)[0]}")
print("errors_pipeline_check passed")
