#!/usr/bin/env bash
# scripts/gpu-bundle.sh [BUILD_DIR] [DEST]: packs what scripts/gpu-check.sh runs into one
# folder that can travel to the GPU machine, whose image has CUDA, NCCL and cuBLAS (as
# Python wheels or in /usr/local/cuda) but not this project's other libraries (UCX, hwloc,
# gflags, OpenBLAS), and cannot fetch them.
#   DEST/bin  the test programs and tools (build tree layout, so sy-run finds ranks by path)
#   DEST/lib  libswitchyard_*.so and every shared library they need except the C library,
#             the dynamic loader and the CUDA libraries (cudart, cuBLAS, NCCL, the driver),
#             which gpu-check.sh finds on the GPU machine
# Default BUILD_DIR build-cuda, DEST build-gpu-bundle (git-ignored as build-*). Prints the
# bundle's size and writes DEST.tgz, the bundle as one compressed file (the device runner
# carries at most 64 MiB with the working tree).
# Limit: the programs need the GPU machine's C library to be at least as new as this one's
# (glibc 2.36 on Debian 12); gpu-check.sh's env step prints the machine's version.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-cuda}
dest=${2:-$root/build-gpu-bundle}
progs="cuda_unit_test cuda_gemm_test cuda_trainer_kernels_test cuda_model_test cuda_ipc_dispatch_test ipc_dispatch_check staged_dispatch_check sy-run sy-cuda-perf sy-gemm-perf sy-gpu-train-perf sy-a2a-perf sy-dispatch-perf sy-overlap-perf sy-train sy-plan"
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
for p in $progs; do
  if [[ -x $build/bin/$p ]]; then cp "$build/bin/$p" "$dest/bin/"; else echo "gpu-bundle: $p not built (skipped)" >&2; fi
done
cp -L "$build"/lib/libswitchyard_*.so* "$dest/lib/" 2>/dev/null || true
# The baselines of bench/comm_quiet.sh (the GPU machine has no UCX tools): ucx_perftest
# (its libraries, libgomp among them, come with the loop below) and the memcpy-rate program.
if [[ -x /usr/bin/ucx_perftest ]]; then cp /usr/bin/ucx_perftest "$dest/bin/"; fi
if [[ -f $root/bench/comm/memcpy_rate.c ]]; then gcc -O2 -o "$dest/bin/memcpy_rate" "$root/bench/comm/memcpy_rate.c"; fi
skip='^(libc|libm|libdl|librt|libpthread|ld-linux-x86-64|libcuda|libcudart|libcublas|libcublasLt|libnccl|linux-vdso)\.'
for f in "$dest"/bin/* "$dest"/lib/*; do
  LD_LIBRARY_PATH=$build/lib ldd "$f" 2>/dev/null | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  name=$(basename "$lib")
  [[ $name =~ $skip ]] && continue
  [[ -e $dest/lib/$name ]] || cp -L "$lib" "$dest/lib/"
done
# UCX loads its transports as modules from its own directory.
if [[ -d /usr/lib/x86_64-linux-gnu/ucx ]]; then cp -rL /usr/lib/x86_64-linux-gnu/ucx "$dest/lib/ucx"; fi
# /usr/bin/time and the default corpus for bench/plan_calibration.sh (the GPU machine has
# neither `time` nor the `bible` program).
[[ -x /usr/bin/time ]] && cp /usr/bin/time "$dest/bin/time"
mkdir -p "$dest/share"
corpus=${SY_CORPUS:-$root/runs/corpus/bible-kjv.txt}
[[ -s $corpus ]] || "$build/bin/sy-train" --preset nano --data default --corpus_cache "$corpus" --steps 0 >/dev/null 2>&1 || true
[[ -s $corpus ]] && cp "$corpus" "$dest/share/kjv.txt"
strip --strip-unneeded "$dest"/bin/* "$dest"/lib/*.so* 2>/dev/null || true
du -sh "$dest"
# One compressed file to carry (the device runner carries at most 64 MiB with the tree):
# unpack there with `tar xzf build-gpu-bundle.tgz`.
tar czf "$dest.tgz" -C "$(dirname "$dest")" "$(basename "$dest")"
du -sh "$dest.tgz"
