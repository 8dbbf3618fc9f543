// sy-gpu-train-perf: forward + backward + AdamW steps of the DeepSeek-V3 model on one GPU
// (trainer/cuda/train_perf.h): tokens/s, model TFLOP/s and their ratio to the BF16 cuBLASLt
// GEMM TFLOP/s of the same run. Output: text, or JSON with --json. Exit 2 on an error.
#include <gflags/gflags.h>

#include <iostream>

#include "switchyard/trainer/cuda/train_perf.h"

DEFINE_string(config, "small", "model preset (nano, tiny, small) or a config.json path");
DEFINE_int64(batch, 8, "sequences per step");
DEFINE_int64(seq, 512, "tokens per sequence");
DEFINE_int32(steps, 10, "timed steps (median)");
DEFINE_int32(warmup, 2, "untimed steps first");
DEFINE_string(precision, "bf16", "GEMM precision: fp32, bf16 or fp8");
DEFINE_int64(gemm_size, 8192, "M = N = K of the BF16 GEMM baseline");
DEFINE_bool(json, false, "print JSON instead of text");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("sy-gpu-train-perf [--config small] [--batch 8] [--seq 512] [--precision bf16] [--json]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    namespace tg = switchyard::trainer::gpu;
    tg::TrainPerfOptions o;
    o.config = FLAGS_config;
    o.batch = FLAGS_batch;
    o.seq_len = FLAGS_seq;
    o.steps = FLAGS_steps;
    o.warmup = FLAGS_warmup;
    o.precision = tg::precision_from_name(FLAGS_precision);
    o.baseline_size = FLAGS_gemm_size;
    const tg::TrainPerfReport r = tg::run_train_perf(o);
    std::cout << (FLAGS_json ? r.json() + "\n" : r.text()) << std::flush;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "sy-gpu-train-perf: " << e.what() << "\n";
    return 2;
  }
}
