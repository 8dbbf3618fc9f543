#!/usr/bin/env bash
# scripts/gpu-check.sh: every check of issue #10 that needs a GPU, as one script for the GPU
# machine (one H100/H200, 16 cores, no network), ordered by importance, capped at about 8
# minutes in total (each step runs under `timeout`; later steps get what is left).
#
#   scripts/gpu-check.sh [BUILD_DIR] [OUT_DIR]
#     BUILD_DIR  default build-gpu-bundle. A folder made by scripts/gpu-bundle.sh (bin/ and
#                lib/, no build.ninja) is used as it is: the GPU machine's image lacks UCX,
#                hwloc, gflags, GTest and OpenBLAS, so the project cannot be configured
#                there. A CMake build dir is (re)built first (16 cores) unless
#                SY_GPU_CHECK_NO_BUILD=1. The CUDA libraries (cudart, cuBLASLt, NCCL) are
#                taken from the machine: /usr/local/cuda and the nvidia-* Python wheels.
#     OUT_DIR    default $OUT if set (the device runner's result folder), else gpu-results
#
# Writes to OUT_DIR at most 8 files (the device runner brings back no more): summary.txt
# (one line per step: name, exit status, seconds), gpu-check-logs.tar.gz (every step's log
# and JSON), and the JSON of the tests and benchmarks. The exit status is 0 when every check
# step passed (benchmarks only have to run).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-gpu-bundle}
out=${2:-${OUT:-$root/gpu-results}}
case $build in /*) ;; *) build=$root/$build ;; esac
mkdir -p "$out"
work=$(mktemp -d /tmp/gpu-check.XXXXXX)  # every log; OUT_DIR gets the summary and a tarball
budget=${SY_GPU_CHECK_BUDGET:-470}
t0=$(date +%s)
failed=0
bin=$build/bin
# Libraries: the build's (or the bundle's), then the machine's CUDA, cuBLAS and NCCL.
cuda_dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/lib 2>/dev/null; python3 - <<'PY' 2>/dev/null
import glob, os, site
for base in site.getsitepackages():
    for d in sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib"))):
        print(d)
PY
)
export LD_LIBRARY_PATH=$build/lib$(printf ':%s' $cuda_dirs)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[[ -d $build/lib/ucx ]] && export UCX_MODULE_DIR=$build/lib/ucx

log() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$work/summary.txt"; }

# step NAME LIMIT_S KIND(check|bench) CMD...: runs CMD under timeout (LIMIT_S or the budget
# left, whichever is smaller), output to OUT/NAME.log.
step() {
  local name=$1 limit=$2 kind=$3
  shift 3
  local left=$(( budget - ($(date +%s) - t0) ))
  if (( left < 10 )); then
    log "SKIP $name (budget spent)"
    [[ $kind == check ]] && failed=1
    return
  fi
  (( limit > left )) && limit=$left
  local s=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$work/$name.log" 2>&1
  local rc=$?
  log "$name rc=$rc $(( $(date +%s) - s ))s (limit ${limit}s)"
  if (( rc != 0 )) && [[ $kind == check ]]; then failed=1; fi
  tail -n 8 "$work/$name.log" | sed "s/^/    $name| /"
}

log "gpu-check: root $root, build $build, out $out, budget ${budget}s"
# 0. The machine: GPU, driver, NCCL found at run time.
step env 30 bench bash -c '
  nvidia-smi; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc; free -g | head -2
  ls -l /usr/local/cuda/lib/libnccl.so* 2>/dev/null; ldconfig -p | grep -i nccl
  grep -h "define NCCL_\(MAJOR\|MINOR\|PATCH\)" /usr/local/cuda/include/nccl.h
  ldd --version | head -1; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"'

# 1. Build (configure if needed) the CUDA tests, tools and the CPU-rank benchmarks.
targets="cuda_unit_test cuda_gemm_test cuda_trainer_kernels_test cuda_model_test cuda_ipc_dispatch_test ipc_dispatch_check staged_dispatch_check sy-run sy-cuda-perf sy-gemm-perf sy-gpu-train-perf sy-a2a-perf sy-dispatch-perf sy-overlap-perf"
if [[ ! -f $build/build.ninja && -x $bin/cuda_unit_test ]] || [[ ${SY_GPU_CHECK_NO_BUILD:-0} == 1 && -x $bin/cuda_unit_test ]]; then
  log "build: using the carried binaries in $bin"
else
  step build 240 check bash -c "
    [[ -f '$build/build.ninja' ]] || cmake -S '$root' -B '$build' -G Ninja -DCMAKE_BUILD_TYPE=Release -DSY_CUDA=ON -DSY_PYTHON=OFF
    cmake --build '$build' -j 16 --target $targets"
fi
ldd "$bin/cuda_unit_test" "$bin/cuda_gemm_test" >"$work/libraries.txt" 2>&1

# 2. Correctness on the GPU. A test skipped for want of a GPU fails the step here (the
# no-GPU error-path tests skip by design when a GPU is present).
gtest() {  # gtest NAME BINARY
  step "$1" 120 check bash -c "'$2' --gtest_output=json:'$work/$1.json' >'$work/$1.out' 2>&1; rc=\$?; cat '$work/$1.out'
    if grep -q 'no GPU on this machine\|this build has no CUDA' '$work/$1.out'; then echo 'GPU tests skipped: no GPU seen'; exit 1; fi
    exit \$rc"
}
gtest test-cuda-unit "$bin/cuda_unit_test"
step ipc-dispatch-2ranks 60 check "$bin/sy-run" -n 2 --timeout 55 -- "$bin/ipc_dispatch_check"
step ipc-dispatch-3ranks 60 check "$bin/sy-run" -n 3 --timeout 55 -- "$bin/ipc_dispatch_check"
step staged-dispatch-2x2 60 check env UCX_NET_DEVICES=lo "$bin/sy-run" -n 4 --nodes 2 --timeout 55 -- "$bin/staged_dispatch_check"
gtest test-cuda-gemm "$bin/cuda_gemm_test"
[[ -x $bin/cuda_trainer_kernels_test ]] && gtest test-cuda-trainer-kernels "$bin/cuda_trainer_kernels_test"
[[ -x $bin/cuda_model_test ]] && gtest test-cuda-model "$bin/cuda_model_test"

# 3. GPU benchmarks, each against a baseline measured in the same run.
step bench-gemm 60 bench bash -c "'$bin/sy-gemm-perf' && '$bin/sy-gemm-perf' --json >'$work/bench-gemm.json'"
step bench-cuda 60 bench bash -c "'$bin/sy-cuda-perf' && '$bin/sy-cuda-perf' --json >'$work/bench-cuda.json'"
[[ -x $bin/sy-gpu-train-perf ]] && step bench-train 90 bench bash -c "'$bin/sy-gpu-train-perf' --config '$root/trainer/configs/small.json' && '$bin/sy-gpu-train-perf' --config '$root/trainer/configs/small.json' --precision fp8"

# 4. The CPU-rank benchmarks on the machine's 16 cores (short settings).
step bench-a2a 45 bench "$bin/sy-run" -n 8 --timeout 40 -- "$bin/sy-a2a-perf" -b 8 -e 16M -f 8 --json
step bench-dispatch 60 bench "$bin/sy-run" -n 8 --timeout 55 -- "$bin/sy-dispatch-perf" --tokens 1024 --iters 5 --json
step bench-overlap 45 bench "$bin/sy-run" -n 2 --timeout 40 -- "$bin/sy-overlap-perf" --tokens 256 --hidden 128 --json
# Issue 6 target (c): overlap efficiency with a core of its own for every rank's compute and
# communication (bench/overlap_16core.sh pins them).
step bench-overlap-16core 150 bench env RANKS_LIST="${SY_OVERLAP_RANKS:-2 4 8}" HIDDEN_LIST="${SY_OVERLAP_HIDDEN:-64 128}" REPS=5 "$root/bench/overlap_16core.sh" "$build"

# 5. Quiet-machine reruns of the CPU benchmarks of issues 4, 5 and 6 (scripts of those layers).
[[ -x $root/bench/overlap_diag.sh ]] && step bench-overlap-diag 90 bench "$root/bench/overlap_diag.sh" "$build"
[[ -x $root/bench/comm_quiet.sh ]] && step bench-comm-quiet 120 bench "$root/bench/comm_quiet.sh" "$build"
[[ ${SY_GPU_CHECK_PLAN:-1} == 1 && -x $bin/sy-plan && -s $build/share/kjv.txt ]] && step bench-plan-calibration 200 bench env PY=python3 TIME_BIN="$bin/time" CORPUS="$build/share/kjv.txt" "$root/bench/plan_calibration.sh" "$build" ${SY_PLAN_ROUNDS:-3}
[[ ${SY_GPU_CHECK_DISPATCH:-1} == 1 ]] && step bench-dispatch-quiet 150 bench env RUNS=${SY_DISPATCH_RUNS:-3} QUIET_MAX=2 "$root/bench/dispatch.sh" "$build"

log "gpu-check: done in $(( $(date +%s) - t0 ))s, checks $([[ $failed == 0 ]] && echo passed || echo FAILED)"
tar czf "$out/gpu-check-logs.tar.gz" -C "$work" .
cp "$work/summary.txt" "$out/"
for f in test-cuda-unit.json test-cuda-gemm.json bench-gemm.json bench-cuda.json; do
  [[ -f $work/$f ]] && cp "$work/$f" "$out/"
done
exit $failed
