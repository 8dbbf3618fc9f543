#!/usr/bin/env python3
"""Summarizes the raw results of bench/comm.sh into the tables of docs/perf.md "## comm".

usage: summarize.py OUT_DIR RUNS [SECTIONS]

SECTIONS (default "latency onenode allreduce ucx ucxlat"; bench/comm_quiet.sh passes
"onenode ucx targets"): the tables to print; "targets" prints each bandwidth target of
issue #4 that the run measured with "met" / "NOT met".
Medians over the runs (min/max in brackets); every ratio is computed within one run (our
number over the baseline measured in the same run), then the median of the ratios is
taken. GB/s are 1e9 bytes per second.
"""
import json
import os
import statistics
import sys

out, runs = sys.argv[1], int(sys.argv[2])
sections = (sys.argv[3] if len(sys.argv) > 3 else "latency onenode allreduce ucx ucxlat").split()
# Medians behind the targets, filled by the tables: (what, median, target, higher is better).
medians = {}


def load_json(path):
    """The JSON document sy-a2a-perf printed (rank 0), or None."""
    try:
        text = open(path).read()
    except OSError:
        return None
    start = text.find("{")
    if start < 0:
        return None
    try:
        return json.loads(text[start:])
    except json.JSONDecodeError:
        return None


def load_float(path):
    try:
        return float(open(path).read().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    m = statistics.median(values)
    fmt = (lambda x: f"{x:.3g}") if m < 10 else (lambda x: f"{x:.1f}")
    return f"**{fmt(m)}** [{fmt(min(values))}-{fmt(max(values))}]"


def human(n):
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n:g} B"


# Per-peer sizes shown in the one-node table (the sweep has every power of two).
SHOWN_PER_PEER = {8, 1 << 10, 1 << 16, 1 << 20, 1 << 22, 1 << 24}


def one_node(np_):
    docs = [load_json(os.path.join(out, f"a2a.np{np_}.{r}.json")) for r in range(1, runs + 1)]
    mem = [load_float(os.path.join(out, f"memcpy.{r}")) for r in range(1, runs + 1)]
    ok = [(d, m) for d, m in zip(docs, mem) if d]
    if not ok:
        print(f"\nnp={np_}: no results")
        return
    mem8 = [load_float(os.path.join(out, f"memcpy8m.{r}")) for r in range(1, runs + 1)]
    small = "" if not any(mem8) else f", 8 MiB: {med(mem8)} GB/s"
    print(f"\n### all_to_all, one node, {np_} ranks ({len(ok)} runs; memcpy pair 256 MiB: {med(mem)} GB/s{small})\n")
    print("| per peer | ours time us | MPI time us | ours busbw | MPI busbw | ours/MPI busbw | total algbw | % of memcpy pair |")
    print("|---|---|---|---|---|---|---|---|")
    sizes = [row["size"] for row in ok[0][0]["results"]]
    for i, size in enumerate(sizes):
        if size // np_ not in SHOWN_PER_PEER:
            continue
        rows = [d["results"][i] for d, _ in ok if i < len(d["results"])]
        ours_t = [r["switchyard"]["time_us"] for r in rows]
        mpi_t = [r["mpi"]["time_us"] for r in rows if "mpi" in r]
        ours_b = [r["switchyard"]["busbw_gbps"] for r in rows]
        mpi_b = [r["mpi"]["busbw_gbps"] for r in rows if "mpi" in r]
        ratio = [r.get("ratio_busbw") for r in rows]
        total = [r["switchyard"]["algbw_gbps"] * np_ for r in rows]
        pct = [100 * r["switchyard"]["algbw_gbps"] * np_ / m for (d, m), r in zip(ok, rows) if m]
        wrong = sum(r["switchyard"]["wrong"] + r.get("mpi", {}).get("wrong", 0) for r in rows)
        flag = "" if wrong == 0 else f" ({wrong} WRONG)"
        print(f"| {human(size / np_)}{flag} | {med(ours_t)} | {med(mpi_t)} | {med(ours_b)} | {med(mpi_b)} | "
              f"{med(ratio)} | {med(total)} | {med(pct)} |")
        if size // np_ >= 1 << 22:
            medians[f"one node, {np_} ranks, {human(size / np_)} per peer: total algbw % of memcpy pair"] = (
                median_or_none(pct), 60 if np_ == 2 else 50, wrong)


def ucx():
    p2p = [load_json(os.path.join(out, f"p2p.{r}.json")) for r in range(1, runs + 1)]
    a2a = [load_json(os.path.join(out, f"a2a.vn2.{r}.json")) for r in range(1, runs + 1)]
    if not any(p2p) and not any(a2a):
        print("\nucx: no results")
        return
    print("\n### Two virtual nodes over UCX tcp (lo), 1 rank each\n")
    rma = [load_json(os.path.join(out, f"p2prma.{r}.json")) for r in range(1, runs + 1)]
    # p2p with 8 messages in flight (sy-a2a-perf --window 8), when a run measured it.
    win = [load_json(os.path.join(out, f"p2pw.{r}.json")) for r in range(1, runs + 1)]
    # Two-way reference (bench/comm/common.sh tag_bw_two_way): two tag_bw streams at once, one
    # each way; the slower stream's GB/s is the first number of each file.
    two_way = any(os.path.exists(os.path.join(out, f"tag_bw2.{1 << 20}.{r}")) for r in range(1, runs + 1))
    print("| message / per peer | tag_bw one way GB/s | p2p GB/s | p2p / tag_bw | a2a per direction GB/s | a2a dir / tag_bw |"
          + (" tag_bw two-way, slower stream GB/s | a2a dir / two-way |" if two_way else "")
          + (" p2p RMA put forced GB/s | RMA / tagged p2p |" if any(rma) else "")
          + (" p2p 8 in flight GB/s | p2p 8 in flight / tag_bw |" if any(win) else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if two_way else "") + ("---|---|" if any(rma) else "")
          + ("---|---|" if any(win) else ""))
    for size in (1 << 20, 1 << 22, 1 << 24):
        tag = [load_float(os.path.join(out, f"tag_bw.{size}.{r}")) for r in range(1, runs + 1)]
        tag2 = [load_float(os.path.join(out, f"tag_bw2.{size}.{r}")) for r in range(1, runs + 1)]
        p, pr, a, ar, a2r = [], [], [], [], []
        for r in range(runs):
            t = tag[r]
            if p2p[r]:
                row = next((x for x in p2p[r]["results"] if x["size"] == size), None)
                if row:
                    p.append(row["switchyard"]["algbw_gbps"])
                    if t:
                        pr.append(row["switchyard"]["algbw_gbps"] / t)
            if a2a[r]:
                row = next((x for x in a2a[r]["results"] if x["size"] == 2 * size), None)
                if row:
                    per_dir = size / (row["switchyard"]["time_us"] * 1e-6) / 1e9
                    a.append(per_dir)
                    if t:
                        ar.append(per_dir / t)
                    if tag2[r]:
                        a2r.append(per_dir / tag2[r])
        q, qr = [], []
        for r in range(runs):
            row = rma[r] and next((x for x in rma[r]["results"] if x["size"] == size), None)
            tagged = p2p[r] and next((x for x in p2p[r]["results"] if x["size"] == size), None)
            if row:
                q.append(row["switchyard"]["algbw_gbps"])
                if tagged:
                    qr.append(row["switchyard"]["algbw_gbps"] / tagged["switchyard"]["algbw_gbps"])
        extra = f" {med(tag2)} | {med(a2r)} |" if two_way else ""
        extra += f" {med(q)} | {med(qr)} |" if any(rma) else ""
        w, wr = [], []
        for r in range(runs):
            row = win[r] and next((x for x in win[r]["results"] if x["size"] == size), None)
            if row:
                w.append(row["switchyard"]["algbw_gbps"])
                if tag[r]:
                    wr.append(row["switchyard"]["algbw_gbps"] / tag[r])
        if any(win):
            extra += f" {med(w)} | {med(wr)} |"
            medians[f"2 virtual nodes, p2p {human(size)}, 8 messages in flight: % of tag_bw"] = (
                None if median_or_none(wr) is None else 100 * median_or_none(wr), 80, 0)
        print(f"| {human(size)} | {med(tag)} | {med(p)} | {med(pr)} | {med(a)} | {med(ar)} |{extra}")
        medians[f"2 virtual nodes, p2p {human(size)}: % of tag_bw"] = (
            None if median_or_none(pr) is None else 100 * median_or_none(pr), 80, 0)
        medians[f"2 virtual nodes, 2-rank all_to_all {human(size)} per peer: per direction % of tag_bw"] = (
            None if median_or_none(ar) is None else 100 * median_or_none(ar), 40, 0)
        if two_way:
            medians[f"2 virtual nodes, 2-rank all_to_all {human(size)} per peer: per direction % of two-way tag_bw"] = (
                None if median_or_none(a2r) is None else 100 * median_or_none(a2r), 80, 0)


def all_reduce():
    print("\n### all_reduce float32 sum, one node\n")
    print("| ranks | buffer | ours time us | MPI time us | ours busbw | MPI busbw | ours/MPI busbw |")
    print("|---|---|---|---|---|---|---|")
    for np_ in (2, 4):
        docs = [d for d in (load_json(os.path.join(out, f"ar.np{np_}.{r}.json")) for r in range(1, runs + 1)) if d]
        if not docs:
            continue
        for i, first in enumerate(docs[0]["results"]):
            rows = [d["results"][i] for d in docs if i < len(d["results"])]
            wrong = sum(r["switchyard"]["wrong"] + r.get("mpi", {}).get("wrong", 0) for r in rows)
            flag = "" if wrong == 0 else f" ({wrong} WRONG)"
            print(f"| {np_} | {human(first['size'])}{flag} | {med([r['switchyard']['time_us'] for r in rows])} | "
                  f"{med([r['mpi']['time_us'] for r in rows if 'mpi' in r])} | "
                  f"{med([r['switchyard']['busbw_gbps'] for r in rows])} | "
                  f"{med([r['mpi']['busbw_gbps'] for r in rows if 'mpi' in r])} | "
                  f"{med([r.get('ratio_busbw') for r in rows])} |")


def latency():
    print("\n### 8-byte all_to_all latency, one node (time per call, us; ours and MPI alternate in one job)\n")
    print("| ranks | form | ours | MPI_Alltoall | ours / MPI time |")
    print("|---|---|---|---|---|")
    for np_ in (1, 2, 4):
        for mode in ("blocking", "async", "op"):
            docs = [load_json(os.path.join(out, f"lat.np{np_}.{mode}.{r}.json")) for r in range(1, runs + 1)]
            rows = [d["results"][0] for d in docs if d and d.get("results")]
            if not rows:
                continue
            ours = [r["switchyard"]["time_us"] for r in rows]
            mpi = [r["mpi"]["time_us"] for r in rows if "mpi" in r]
            ratio = [r["switchyard"]["time_us"] / r["mpi"]["time_us"] for r in rows
                     if "mpi" in r and r["mpi"]["time_us"] > 0]
            wrong = sum(r["switchyard"]["wrong"] + r.get("mpi", {}).get("wrong", 0) for r in rows)
            flag = "" if wrong == 0 else f" ({wrong} WRONG)"
            name = {"blocking": "all_to_all (inline path)", "async": "iall_to_all().wait()",
                    "op": "op path (SWITCHYARD_COMM_INLINE=0)"}[mode]
            print(f"| {np_} | {name}{flag} | {med(ours)} | {med(mpi)} | {med(ratio)} |")


def ucx_latency():
    a2a = [load_json(os.path.join(out, f"ucxlat.a2a.{r}.json")) for r in range(1, runs + 1)]
    a2a_old = [load_json(os.path.join(out, f"ucxlat.a2a_old.{r}.json")) for r in range(1, runs + 1)]
    p2p = [load_json(os.path.join(out, f"ucxlat.p2p.{r}.json")) for r in range(1, runs + 1)]
    lat = [load_float(os.path.join(out, f"tag_lat.{r}")) for r in range(1, runs + 1)]
    lat_avg = [load_float(os.path.join(out, f"tag_lat_avg.{r}")) for r in range(1, runs + 1)]
    if not any(a2a) and not any(p2p):
        print("\nucxlat: no results")
        return
    print("\n### Small messages between virtual nodes (UCX tcp on lo)\n")
    print("| what | time us | ucx_perftest tag_lat 1 KiB typical us | ratio to typical | tag_lat average us |")
    print("|---|---|---|---|---|")
    for name, docs in (("all_to_all 1 KiB per peer, 4 ranks on 2 nodes", a2a),
                       ("the same, wait policy before the fix (spin 2000, 50 yields)", a2a_old),
                       ("p2p 1 KiB, 2 ranks on 2 nodes (messages back to back, one in flight)", p2p)):
        t = [d["results"][0]["switchyard"]["time_us"] if d and d.get("results") else None for d in docs]
        ratio = [a / b for a, b in zip(t, lat) if a and b]
        print(f"| {name} | {med(t)} | {med(lat)} | {med(ratio)} | {med(lat_avg)} |")


def targets():
    print("\n### Targets (medians over runs of the per-run ratios)\n")
    print("| target | measured % | needed % | |")
    print("|---|---|---|---|")
    for what, (value, needed, wrong) in medians.items():
        verdict = "no data" if value is None else ("met" if value >= needed else "NOT met")
        if wrong:
            verdict += f", {wrong} WRONG elements"
        shown = "n/a" if value is None else f"{value:.1f}"
        print(f"| {what} | {shown} | >= {needed} | {verdict} |")


for name, show in (("latency", latency), ("onenode", lambda: (one_node(2), one_node(4))),
                   ("allreduce", all_reduce), ("ucx", ucx), ("ucxlat", ucx_latency), ("targets", targets)):
    if name in sections:
        show()
