// sy-gemm-perf: cuBLASLt FP8 block-scaled GEMM vs BF16 on the V3 shapes, same run
// (trainer/cuda/gemm_perf.h). Output: a text table, or JSON with --json. Exit 2 on an error.
#include <gflags/gflags.h>

#include <iostream>

#include "switchyard/trainer/cuda/gemm_perf.h"

DEFINE_int32(iters, 20, "timed runs (median)");
DEFINE_int32(warmup, 3, "untimed runs first");
DEFINE_int64(m, 0, "one shape instead of the V3 set: M (with --n and --k)");
DEFINE_int64(n, 0, "N of the one shape");
DEFINE_int64(k, 0, "K of the one shape");
DEFINE_bool(json, false, "print JSON instead of text");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("sy-gemm-perf [--iters 20] [--m 4096 --n 7168 --k 2048] [--json]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    switchyard::trainer::gpu::GemmPerfOptions o;
    o.iters = FLAGS_iters;
    o.warmup = FLAGS_warmup;
    if (FLAGS_m > 0) o.shapes = {{FLAGS_m, FLAGS_n, FLAGS_k}};
    const auto rep = switchyard::trainer::gpu::run_gemm_perf(o);
    std::cout << (FLAGS_json ? rep.json() + "\n" : rep.text()) << std::flush;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "sy-gemm-perf: " << e.what() << "\n";
    return 2;
  }
}
