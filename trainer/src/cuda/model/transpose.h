// Matrix transpose on the device (internal to the GPU model's FP8 path): the wgrad operands
// dy^T and x^T, W^T for dgrad, and the 1x128 tile scales into cuBLASLt's VEC128 layout.
#pragma once

#include <cstdint>

#include "switchyard/common/cuda.h"

namespace switchyard::trainer::gpu {

// dst [cols x rows] = src [rows x cols]^T, FP32, asynchronous on `stream`.
void transpose(const float* src, int64_t rows, int64_t cols, float* dst, cuda::StreamHandle stream);

}  // namespace switchyard::trainer::gpu
