#!/usr/bin/env bash
# F&B overlap targets (a) and (b) of issue 6 on a 2-core machine (docs/perf.md "## pipeline").
# Not run by ctest.
#
#   bench/overlap.sh [BUILD_DIR]        RUNS=3 REPS=9 by default
#
# (a) 2 ranks on 2 busy cores: rank r computes on core r and drives its dispatch/combine
#     on a CommWorker pinned to the other core. Target: overlapped <= 1.1 x serial.
# (b) compute and communication progress on separate cores: both ranks compute on core 0,
#     both CommWorkers (and the communicators' progress threads) live on core 1.
#     Target: overlapped <= 1.15 x max(compute, communication).
# Each run is one sy-overlap-perf job (serial and overlapped pairs interleaved, medians of
# REPS); the runs alternate (a), (b), (a), (b), ... and the summary gives, per
# configuration, the median over runs of each quantity (and the range of the target ratio).
# compute and comm are measured alone (every rank at once: in (b) both ranks' compute
# shares core 0 there as in the pairs); "comm in serial" is rank 0's collective time inside
# the serial pair (it includes waits for the other rank and for core 0; what (b) used to
# divide by before 2026-11-26).
# All compute is single-threaded loops; OPENBLAS_NUM_THREADS=1 anyway.
set -euo pipefail
build=${1:-build}
bin=$(cd "$build/bin" && pwd)
RUNS=${RUNS:-3}
REPS=${REPS:-9}
ARGS=${ARGS:-"--tokens 256 --hidden 128 --experts 8 --top_k 2"}
export OPENBLAS_NUM_THREADS=1
[[ $(nproc) -ge 2 ]] || { echo "overlap.sh: needs 2 CPUs, have $(nproc)" >&2; exit 2; }
out=$(mktemp /tmp/sy-overlap.XXXXXX)
trap 'rm -f "$out"' EXIT
echo "overlap.sh: $(nproc) CPUs, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((i = 0; i < RUNS; ++i)); do
  "$bin/sy-run" -n 2 -- "$bin/sy-overlap-perf" $ARGS --reps "$REPS" --json \
    --compute_cpus 0,1 --comm_cpus 1,0 --label a | sed -n 's/^\[0\] {/{/p' >>"$out"
  "$bin/sy-run" -n 2 -- "$bin/sy-overlap-perf" $ARGS --reps "$REPS" --json \
    --compute_cpus 0 --comm_cpus 1 --label b | sed -n 's/^\[0\] {/{/p' >>"$out"
done
echo "overlap.sh: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
target = {"a": ("overlapped/serial", "overlapped_over_serial", 1.10),
          "b": ("overlapped/max(compute,comm)", "overlapped_over_longer", 1.15)}
print("cfg runs  compute_ms  comm_ms  serial_ms  overlapped_ms  ovl/serial  ovl/longer  efficiency  comm_in_serial_ms  target")
for cfg in ("a", "b"):
    rs = [r for r in rows if r["label"] == cfg]
    med = lambda k: statistics.median(r[k] for r in rs)
    name, key, limit = target[cfg]
    vals = sorted(r[key] for r in rs)
    verdict = "met" if med(key) <= limit else "NOT met"
    print(f"({cfg}) {len(rs):4d} {med('compute_s')*1e3:11.2f} {med('communication_s')*1e3:8.2f} "
          f"{med('serial_s')*1e3:10.2f} {med('overlapped_s')*1e3:14.2f} {med('overlapped_over_serial'):11.3f} "
          f"{med('overlapped_over_longer'):11.3f} {med('efficiency'):11.3f} {med('serial_communication_rank0_s')*1e3:18.2f}  "
          f"{name} <= {limit}: {verdict} "
          f"(runs {vals[0]:.3f}..{vals[-1]:.3f})")
PY
