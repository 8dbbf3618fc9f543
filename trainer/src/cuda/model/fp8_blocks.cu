// 128x128 weight-block FP8 quantiser (see cuda/fp8_blocks.h). The codec is dispatch's device
// twin of the CPU encoder (fp8_device.cuh: every float operation explicitly rounded), so
// codes and scales are the CPU's bit for bit.
#include "switchyard/trainer/cuda/fp8_blocks.h"

#include "../../../../dispatch/src/cuda/fp8_device.cuh"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kBlock = 128;
constexpr int kThreads = 256;

// Block (bi, bj) of w: amax (max is exact in any order), the scale, then the codes.
__global__ void quantize_blocks_kernel(const float* __restrict__ w, int64_t rows, int64_t cols, bool pow2_scale,
                                       int64_t ld_scales, uint8_t* __restrict__ codes, float* __restrict__ scales) {
  __shared__ float warp_max[kThreads / 32];
  __shared__ float block_scale;
  const int64_t r0 = int64_t(blockIdx.y) * kBlock, c0 = int64_t(blockIdx.x) * kBlock;
  const int nr = int(min(int64_t(kBlock), rows - r0)), nc = int(min(int64_t(kBlock), cols - c0));
  float amax = 0.0f;
  for (int i = threadIdx.x; i < nr * nc; i += kThreads) amax = fmaxf(amax, fabsf(w[(r0 + i / nc) * cols + c0 + i % nc]));
  for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = amax;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = warp_max[0];
    for (int i = 1; i < kThreads / 32; ++i) m = fmaxf(m, warp_max[i]);
    block_scale = dispatch::gpu::tile_scale(m, pow2_scale);
    scales[blockIdx.y * ld_scales + blockIdx.x] = block_scale;
  }
  __syncthreads();
  const float s = block_scale;
  for (int i = threadIdx.x; i < nr * nc; i += kThreads) {
    const int64_t at = (r0 + i / nc) * cols + c0 + i % nc;
    codes[at] = dispatch::gpu::e4m3_encode(__fdiv_rn(w[at], s));
  }
}

}  // namespace

void quantize_fp8_blocks(const float* w, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* codes, float* scales,
                         cuda::StreamHandle stream) {
  SY_REQUIRE(rows >= 0 && cols >= 0, "quantize_fp8_blocks: rows = " << rows << " and cols = " << cols
                                                                    << " must be non-negative");
  if (rows == 0 || cols == 0) return;
  const int64_t rb = (rows + kBlock - 1) / kBlock, kb = (cols + kBlock - 1) / kBlock, l4 = (kb + 3) / 4 * 4;
  SY_REQUIRE(rb < 65536 && kb < (int64_t{1} << 31),
             "quantize_fp8_blocks: " << rows << " x " << cols << " is too large for one grid");
  SY_CUDA_CHECK(cudaMemsetAsync(scales, 0, rb * l4 * sizeof(float), stream), "quantize_fp8_blocks: scale padding");
  quantize_blocks_kernel<<<dim3(unsigned(kb), unsigned(rb)), kThreads, 0, stream>>>(w, rows, cols, pow2_scale, l4,
                                                                                    codes, scales);
  SY_CUDA_CHECK_LAUNCH("quantize_fp8_blocks of " << rows << " x " << cols);
}

}  // namespace switchyard::trainer::gpu
