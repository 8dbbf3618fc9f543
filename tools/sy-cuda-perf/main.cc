// sy-cuda-perf: the CUDA backend's kernels on one GPU against cudaMemcpy D2D measured in
// the same run (dispatch/cuda/gpu_perf.h). Output: a text table, or JSON with --json.
// Exit code 2 on an error (e.g. no GPU: "unsupported: ...").
#include <gflags/gflags.h>

#include <iostream>
#include <sstream>
#include <string>

#include "switchyard/dispatch/cuda/gpu_perf.h"

DEFINE_int64(tokens, 4096, "tokens (T)");
DEFINE_int64(hidden, 7168, "hidden size (H)");
DEFINE_int32(experts, 64, "experts of the world-size-1 dispatch");
DEFINE_int32(topk, 8, "experts per token (K)");
DEFINE_int32(iters, 10, "timed runs (median)");
DEFINE_int32(warmup, 2, "untimed runs first");
DEFINE_bool(nccl, true, "include the NCCL rows");
DEFINE_bool(json, false, "print JSON instead of text");
DEFINE_string(sms, "8,16,24,32,48,64,96", "SM budgets (CTAs of the copy kernels) of the @N rows, comma-separated");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("sy-cuda-perf [--tokens 4096] [--hidden 7168] [--json]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    switchyard::dispatch::gpu::GpuPerfOptions o;
    o.num_tokens = FLAGS_tokens;
    o.hidden = FLAGS_hidden;
    o.num_experts = FLAGS_experts;
    o.top_k = FLAGS_topk;
    o.iters = FLAGS_iters;
    o.warmup = FLAGS_warmup;
    o.nccl = FLAGS_nccl;
    o.sm_budgets.clear();
    std::stringstream list(FLAGS_sms);
    for (std::string item; std::getline(list, item, ',');)
      if (!item.empty()) o.sm_budgets.push_back(std::stoi(item));
    const auto rep = switchyard::dispatch::gpu::run_gpu_perf(o);
    std::cout << (FLAGS_json ? rep.json() + "\n" : rep.text()) << std::flush;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "sy-cuda-perf: " << e.what() << "\n";
    return 2;
  }
}
