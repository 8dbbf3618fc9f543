// The FP8 path of the GPU model's Linear layers (internal; linear.cc calls it for kFp8):
// DeepSeek-V3's recipe as the CPU emulation (train/fp8_gemm.h) computes it:
//   forward  y  = x W^T : x in 1x128 tiles along `in`, W in 128x128 blocks
//   dgrad    dx = dy W  : dy in 1x128 tiles along `out` (gradient amax floor), W^T in blocks
//   wgrad    dW += dy^T x: dy^T and x^T in 1x128 tiles along the tokens
// E4M3 operands through gemm_fp8_nt (FP32 output), weights quantised on every call (no
// cache), gradient tiles through the CPU's exact 2^32 pre-scaling. Each function returns
// false, doing nothing, when cuBLASLt's FP8 GEMM cannot take the shape (the contraction a
// multiple of 128, the other two of 16): the caller then runs the BF16 GEMM.
#pragma once

#include <cstdint>

#include "linear.h"

namespace switchyard::trainer::gpu {

bool fp8_linear_forward(Context& ctx, const Linear& l, const float* x, int64_t n, float* y);
bool fp8_linear_backward_input(Context& ctx, const Linear& l, const float* dy, int64_t n, float* dx, bool accumulate);
bool fp8_linear_backward_weight(Context& ctx, const Linear& l, const float* dy, const float* x, int64_t n);

}  // namespace switchyard::trainer::gpu
