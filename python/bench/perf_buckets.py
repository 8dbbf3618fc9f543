"""Folds `perf script` output (call graphs, e.g. perf record --call-graph dwarf) of the
Python rank processes into where Switchyard's CPU time goes, by the first frame (from the
leaf) that names a known part. Prints one line per bucket: percent of the samples.

Usage: perf script -i perf.data | python3 python/bench/perf_buckets.py
Buckets: the comm transport (CMA copies, UCX, progress/queues), dispatch's own work
(Buffer::dispatch, Buffer::combine, reduce_back, result-vector building, page faults on
fresh result memory), the binding (pybind11/torch conversion), the Python interpreter,
scheduler/futex waits.
"""
import collections
import sys


def classify(stack):
    whole = " ".join(stack)
    if "process_vm_readv" in whole or "process_vm_writev" in whole:
        return "comm: CMA copy between processes (process_vm_readv)"
    for f in stack:
        if f.startswith(("uct_", "ucp_", "ucs_")):
            return "comm: UCX"
    if "exc_page_fault" in whole:
        if any(k in whole for k in ("Buffer::dispatch", "Buffer::combine", "reduce_back", "exchange_rows")):
            return "dispatch: page faults on fresh result/staging memory"
        return "page faults (other)"
    leaf = stack[0] if stack else "?"
    if "futex" in leaf or "schedule" in leaf or "finish_task_switch" in leaf:
        return "scheduler/futex (waiting)"
    for f in stack:
        if "_M_range_insert" in f or "_M_default_append" in f or "_M_fill_insert" in f:
            return "dispatch: building result vectors (vector insert/resize)"
        if "reduce_back" in f:
            return "dispatch: combine reduce (reduce_back)"
        if "comm::" in f:
            return "comm: progress/queues (not the copies)"
        if "Buffer::combine" in f:
            return "dispatch: Buffer::combine (weighting, packing)"
        if "Buffer::dispatch" in f or "exchange_rows" in f:
            return "dispatch: Buffer::dispatch (layout, packing, unpacking)"
        if "pybind11" in f or "from_blob" in f or "THPVariable" in f:
            return "binding (pybind11/torch conversion, result deleters)"
        if "_PyEval" in f or f.startswith("Py"):
            return "python interpreter"
    return "other: " + leaf[:60]


def main():
    counts, total = collections.Counter(), 0
    stack, is_python = [], False
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            if stack and is_python:
                counts[classify(stack)] += 1
                total += 1
            stack, is_python = [], False
        elif not line[0].isspace():
            is_python = line.split()[0].startswith("python")
        else:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                stack.append(parts[1].split(" (")[0])
    for name, n in counts.most_common():
        print(f"{100.0 * n / max(total, 1):6.1f}%  {name}")
    print(f"({total} samples)")


if __name__ == "__main__":
    main()
