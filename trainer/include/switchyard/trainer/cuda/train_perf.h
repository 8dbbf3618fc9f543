// The sy-gpu-train-perf measurement: training steps (forward + backward + AdamW) of the GPU
// model on one GPU, as tokens per second and achieved model TFLOP/s, against the BF16
// cuBLASLt GEMM TFLOP/s of a large square GEMM measured in the same run (the ratio is the
// model-FLOPs utilisation relative to what cuBLASLt reaches on this GPU).
//
// Step times are host wall-clock times of whole steps (each step ends synchronised), median
// over `steps` timed steps after `warmup` untimed ones; tokens are deterministic pseudo-random
// ids (seed). Requires a CUDA build and a GPU: throws Unsupported otherwise.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/trainer/config.h"
#include "switchyard/trainer/cuda/model.h"

namespace switchyard::trainer::gpu {

struct TrainPerfOptions {
  std::string config = "small";  // a preset name (nano, tiny, small) or a config.json path
  int64_t batch = 8;
  int64_t seq_len = 512;
  int steps = 10;
  int warmup = 2;
  Precision precision = Precision::kBfloat16;
  int64_t baseline_size = 8192;  // M = N = K of the BF16 GEMM baseline
  uint64_t seed = 1;
  double lr = 1e-3;
};

struct TrainPerfReport {
  std::string device;
  TrainPerfOptions options;
  int64_t parameters = 0;            // elements of the parameter slab
  double flops_per_step = 0;         // train_step_flops
  std::vector<double> step_ms;       // timed steps, in order
  std::vector<double> losses;        // total loss of every step (warm-up included)
  double step_ms_median = 0;
  double tokens_per_s = 0;           // batch * seq_len / median step time
  double model_tflops = 0;           // flops_per_step / median step time
  double gemm_bf16_tflops = 0;       // the baseline, median of the timed GEMMs
  double mfu_ratio = 0;              // model_tflops / gemm_bf16_tflops
  std::string text() const;
  std::string json() const;
};

// Model FLOPs of one training step of `batch` sequences of `seq_len` tokens, the usual
// 3x-forward count: 6 * tokens * (Linear weights one token passes through: attention
// projections, the dense FFN or the gate, K routed and the shared experts, the head, the MTP
// modules' projection, layer and head) plus the causal attention's 3 * 2 * H * (dqk + dv)
// * T^2 / 2 per sequence and layer (MTP layers included). Closed form from the config.
double train_step_flops(const ModelConfig& config, int64_t batch, int64_t seq_len);

TrainPerfReport run_train_perf(const TrainPerfOptions& options);

}  // namespace switchyard::trainer::gpu
