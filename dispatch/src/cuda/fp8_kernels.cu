// FP8 E4M3 per-1x128 cast on the GPU (kernels.h): one warp per tile, 4 channels per lane.
// The amax is taken on the float bits with NaN mapped to 0 (as the CPU loop does), the scale
// and the codes come from fp8_device.cuh: bit-identical to dispatch::quantize_fp8_tiles.
#include <cuda_runtime.h>

#include "fp8_device.cuh"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch::gpu {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kPerLane = kFp8TileSize / 32;

__device__ __forceinline__ float load_value(const float* x, int64_t i) { return x[i]; }
__device__ __forceinline__ float load_value(const uint16_t* x, int64_t i) { return bf16_to_float_dev(x[i]); }

template <class T>
__global__ void quantize_tiles_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t tiles, bool pow2_scale,
                                      uint8_t* __restrict__ q, float* __restrict__ scales) {
  const int lane = threadIdx.x % 32;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (tile >= rows * tiles) return;
  const int64_t r = tile / tiles, t = tile % tiles;
  const int64_t c0 = t * kFp8TileSize;
  const int64_t n = min(static_cast<int64_t>(kFp8TileSize), cols - c0);
  float v[kPerLane];
  uint32_t amax_bits = 0;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int64_t i = lane + 32 * j;
    v[j] = i < n ? load_value(x, r * cols + c0 + i) : 0.0f;
    uint32_t a = __float_as_uint(v[j]) & 0x7fffffffu;
    a = a > 0x7f800000u ? 0u : a;
    amax_bits = a > amax_bits ? a : amax_bits;
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const uint32_t o = __shfl_xor_sync(0xffffffffu, amax_bits, off);
    amax_bits = o > amax_bits ? o : amax_bits;
  }
  const float scale = tile_scale(__uint_as_float(amax_bits), pow2_scale);
  if (lane == 0) scales[r * tiles + t] = scale;
  uint8_t* out = q + r * cols + c0;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int64_t i = lane + 32 * j;
    if (i < n) out[i] = e4m3_encode(__fdiv_rn(v[j], scale));
  }
}

template <class T>
void launch_quantize(const T* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales,
                     cuda::StreamHandle stream) {
  if (rows < 0 || cols < 0)
    SY_THROW(InvalidArgument, "gpu::quantize_fp8_tiles: rows = " << rows << ", cols = " << cols << " must be >= 0");
  const int64_t tiles = fp8_num_tiles(cols);
  const int64_t total = rows * tiles;
  if (total == 0) return;
  SY_REQUIRE(x != nullptr && q != nullptr && scales != nullptr, "gpu::quantize_fp8_tiles: null pointer");
  const int64_t blocks = (total + kWarpsPerBlock - 1) / kWarpsPerBlock;
  SY_REQUIRE(blocks < (int64_t{1} << 31), "gpu::quantize_fp8_tiles: " << rows << " x " << cols << " is too large");
  quantize_tiles_kernel<T><<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(x, rows, cols, tiles,
                                                                                              pow2_scale, q, scales);
  SY_CUDA_CHECK_LAUNCH("gpu::quantize_fp8_tiles of " << rows << " x " << cols);
}

}  // namespace

void quantize_fp8_tiles(const float* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales,
                        cuda::StreamHandle stream) {
  launch_quantize(x, rows, cols, pow2_scale, q, scales, stream);
}

void quantize_fp8_tiles(const uint16_t* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales,
                        cuda::StreamHandle stream) {
  launch_quantize(x, rows, cols, pow2_scale, q, scales, stream);
}

}  // namespace switchyard::dispatch::gpu
