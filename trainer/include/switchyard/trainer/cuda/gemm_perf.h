// The sy-gemm-perf benchmark: cuBLASLt FP8 block-scaled GEMM (activations 1x128, weights
// 128x128) against the BF16 GEMM of the same shape measured in the same run, GEMM only with
// the scales precomputed; the 1x128 quantization of the activations is timed on its own.
// Default shapes are DeepSeek-V3's (M = 4096 tokens; N x K = 7168 x 2048, 2048 x 7168,
// 24576 x 1536). Times are medians of `iters` runs (CUDA events) after `warmup`. Requires a
// GPU: throws Unsupported without one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard::trainer::gpu {

struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
};

struct GemmPerfOptions {
  std::vector<GemmShape> shapes = {{4096, 7168, 2048}, {4096, 2048, 7168}, {4096, 24576, 1536}};
  int iters = 20;
  int warmup = 3;
};

struct GemmPerfRow {
  GemmShape shape;
  double bf16_us = 0, fp8_us = 0, quantize_us = 0;
  double bf16_tflops = 0, fp8_tflops = 0;
  double fp8_speedup = 0;  // bf16_us / fp8_us
};

struct GemmPerfReport {
  std::string device;
  int cublaslt_version = 0;
  GemmPerfOptions options;
  std::vector<GemmPerfRow> rows;
  std::string text() const;
  std::string json() const;
};

GemmPerfReport run_gemm_perf(const GemmPerfOptions& options);

}  // namespace switchyard::trainer::gpu
