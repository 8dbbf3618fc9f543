// Scale-layout conversions of gemm.h (host code, built with and without CUDA).
#include "switchyard/common/error.h"
#include "switchyard/trainer/cuda/gemm.h"

namespace switchyard::trainer::gpu {

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

std::vector<float> row128_scales_for_device(const std::vector<float>& scales, int64_t rows, int64_t cols) {
  const int64_t kb = ceil_div(cols, 128);
  SY_REQUIRE(static_cast<int64_t>(scales.size()) == rows * kb,
             "row128_scales_for_device: " << scales.size() << " scales for " << rows << " x " << kb << " tiles");
  std::vector<float> out(scales.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < kb; ++g) out[g * rows + r] = scales[r * kb + g];
  return out;
}

std::vector<float> block128_scales_for_device(const std::vector<float>& scales, int64_t rows, int64_t cols) {
  const int64_t rb = ceil_div(rows, 128), kb = ceil_div(cols, 128), l4 = ceil_div(kb, 4) * 4;
  SY_REQUIRE(static_cast<int64_t>(scales.size()) == rb * kb,
             "block128_scales_for_device: " << scales.size() << " scales for " << rb << " x " << kb << " blocks");
  std::vector<float> out(rb * l4, 0.0f);
  for (int64_t b = 0; b < rb; ++b)
    for (int64_t g = 0; g < kb; ++g) out[b * l4 + g] = scales[b * kb + g];
  return out;
}

}  // namespace switchyard::trainer::gpu
