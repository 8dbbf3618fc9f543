// Interleaved rotary embedding on strided sub-vectors (kernels::rope_apply), forward and
// inverse. For position p and pair i (angle table cos/sin [seq_len, half] in FP32):
//   out[2i]   = x0 cos - x1 sin          (sin -> -sin for the inverse rotation)
//   out[2i+1] = x0 sin + x1 cos
// One thread per (row, head, pair); products and sums rounded in the CPU's order, so the
// result equals the CPU's bit for bit when the tables hold the same floats.
#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kThreads = 256;

__global__ void rope_kernel(const float* __restrict__ cos_t, const float* __restrict__ sin_t, int64_t seq_len,
                            int64_t half, const float* in, int64_t ld_in, int64_t hs_in, float* out, int64_t ld_out,
                            int64_t hs_out, int64_t rows, int64_t heads, bool inverse) {
  const int64_t total = rows * heads * half;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < total; g += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = g % half, h = (g / half) % heads, r = g / (half * heads);
    const int64_t p = r % seq_len;
    const float c = cos_t[p * half + i];
    const float s = inverse ? -sin_t[p * half + i] : sin_t[p * half + i];
    const float* x = in + r * ld_in + h * hs_in + 2 * i;
    const float x0 = x[0], x1 = x[1];
    float* y = out + r * ld_out + h * hs_out + 2 * i;
    y[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    y[1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
  }
}

}  // namespace

void rope_apply(const float* cos, const float* sin, int64_t seq_len, int64_t half, const float* in, int64_t ld_in,
                int64_t head_stride_in, float* out, int64_t ld_out, int64_t head_stride_out, int64_t rows,
                int64_t heads, bool inverse, cuda::StreamHandle stream) {
  const char* fn = "rope_apply";
  SY_GPU_REQUIRE(seq_len >= 1, fn, "seq_len = " << seq_len << " must be >= 1");
  SY_GPU_REQUIRE(half >= 1, fn, "half = " << half << " must be >= 1");
  SY_GPU_REQUIRE_NONNEG(fn, rows);
  SY_GPU_REQUIRE(heads >= 1, fn, "heads = " << heads << " must be >= 1");
  SY_GPU_REQUIRE(heads == 1 || head_stride_in >= 2 * half, fn,
                 "head_stride_in = " << head_stride_in << " must be >= 2 * half = " << 2 * half);
  SY_GPU_REQUIRE(heads == 1 || head_stride_out >= 2 * half, fn,
                 "head_stride_out = " << head_stride_out << " must be >= 2 * half = " << 2 * half);
  SY_GPU_REQUIRE(ld_in >= (heads - 1) * head_stride_in + 2 * half, fn,
                 "ld_in = " << ld_in << " is smaller than the " << heads << " heads it holds");
  SY_GPU_REQUIRE(ld_out >= (heads - 1) * head_stride_out + 2 * half, fn,
                 "ld_out = " << ld_out << " is smaller than the " << heads << " heads it holds");
  if (rows == 0) return;
  const int64_t total = rows * heads * half;
  rope_kernel<<<detail::grid_for(total, kThreads), kThreads, 0, stream>>>(cos, sin, seq_len, half, in, ld_in,
                                                                         head_stride_in, out, ld_out, head_stride_out,
                                                                         rows, heads, inverse);
  SY_CUDA_CHECK_LAUNCH("gpu::rope_apply of " << rows << " rows x " << heads << " heads x " << 2 * half);
}

}  // namespace switchyard::trainer::gpu
