// FP8 E4M3 per-1x128 cast on the GPU (kernels.h). One warp per tile, each lane owning 4
// consecutive channels: one 8-byte (BF16) or 16-byte (FP32) load and one 4-byte store of codes
// per lane, the whole warp touching one contiguous 256/512-byte input and 128-byte output
// span. A warp takes kTilesPerWarp consecutive tiles and issues all their loads before any
// arithmetic, so each lane has several loads in flight. The amax is taken on the float bits
// with NaN mapped to 0 (as the CPU loop does), the scale, the division and the codes come
// from fp8_device.cuh (the codes from the hardware E4M3 conversion, two per instruction):
// bit-identical to dispatch::quantize_fp8_tiles. Short last tiles, columns
// not a multiple of 4 and unaligned pointers take a guarded per-element path in the same kernel.
#include <cuda_runtime.h>

#include "fp8_device.cuh"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch::gpu {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kTilesPerWarp = 4;
constexpr int kPerLane = kFp8TileSize / 32;  // 4 consecutive channels per lane
static_assert(kPerLane == 4, "the vector path packs 4 codes into one 32-bit store");

// Four consecutive values at x + i (i a multiple of 4; the caller checked the alignment).
__device__ __forceinline__ void load4(const float* x, int64_t i, float (&v)[4]) {
  const float4 f = *reinterpret_cast<const float4*>(x + i);
  v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
}
__device__ __forceinline__ void load4(const uint16_t* x, int64_t i, float (&v)[4]) {
  const uint2 b = *reinterpret_cast<const uint2*>(x + i);
  v[0] = __uint_as_float(b.x << 16), v[1] = __uint_as_float(b.x & 0xffff0000u);
  v[2] = __uint_as_float(b.y << 16), v[3] = __uint_as_float(b.y & 0xffff0000u);
}
__device__ __forceinline__ float load1(const float* x, int64_t i) { return x[i]; }
__device__ __forceinline__ float load1(const uint16_t* x, int64_t i) { return bf16_to_float_dev(x[i]); }

// vector: every row start is aligned for load4 and the 4-byte code store (cols % 4 == 0 and
// aligned base pointers); then whole tiles take the vector path.
template <class T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    quantize_tiles_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t tiles, bool pow2_scale,
                          bool vector, uint8_t* __restrict__ q, float* __restrict__ scales) {
  const int lane = threadIdx.x % 32;
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32) * kTilesPerWarp;
  const int64_t total = rows * tiles;
  float v[kTilesPerWarp][kPerLane];
  int64_t base[kTilesPerWarp];  // flat index of the tile's first channel
  int n[kTilesPerWarp];         // channels in the tile (0: past the end)
  // One division per warp (64-bit division is emulated); the next tiles step along the row.
  int64_t r = first / tiles, t = first - (first / tiles) * tiles;
#pragma unroll
  for (int w = 0; w < kTilesPerWarp; ++w) {
    n[w] = 0;
    base[w] = 0;
    if (first + w < total) {
      const int64_t c0 = t * kFp8TileSize;
      base[w] = r * cols + c0;
      n[w] = static_cast<int>(min(static_cast<int64_t>(kFp8TileSize), cols - c0));
    }
    if (++t == tiles) t = 0, ++r;
    if (vector && n[w] == kFp8TileSize) {
      load4(x, base[w] + kPerLane * lane, v[w]);
    } else {
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int c = kPerLane * lane + j;
        v[w][j] = c < n[w] ? load1(x, base[w] + c) : 0.0f;
      }
    }
  }
#pragma unroll
  for (int w = 0; w < kTilesPerWarp; ++w) {
    if (n[w] == 0) break;  // warp-uniform
    uint32_t amax_bits = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      uint32_t a = __float_as_uint(v[w][j]) & 0x7fffffffu;
      a = a > 0x7f800000u ? 0u : a;
      amax_bits = a > amax_bits ? a : amax_bits;
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      const uint32_t o = __shfl_xor_sync(0xffffffffu, amax_bits, off);
      amax_bits = o > amax_bits ? o : amax_bits;
    }
    const float scale = tile_scale(__uint_as_float(amax_bits), pow2_scale);
    if (lane == 0) scales[first + w] = scale;
    const TileDivider div = make_tile_divider(scale);
    const uint32_t packed = tile_codes4(v[w], div);
    if (vector && n[w] == kFp8TileSize) {
      *reinterpret_cast<uint32_t*>(q + base[w] + kPerLane * lane) = packed;
    } else {
#pragma unroll
      for (int j = 0; j < kPerLane; ++j)
        if (kPerLane * lane + j < n[w]) q[base[w] + kPerLane * lane + j] = static_cast<uint8_t>(packed >> (8 * j));
    }
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
  const int64_t per_block = static_cast<int64_t>(kWarpsPerBlock) * kTilesPerWarp;
  const int64_t blocks = (total + per_block - 1) / per_block;
  SY_REQUIRE(blocks < (int64_t{1} << 31), "gpu::quantize_fp8_tiles: " << rows << " x " << cols << " is too large");
  const bool vector = cols % kPerLane == 0 && reinterpret_cast<uintptr_t>(x) % (kPerLane * sizeof(T)) == 0 &&
                      reinterpret_cast<uintptr_t>(q) % kPerLane == 0;
  quantize_tiles_kernel<T><<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(
      x, rows, cols, tiles, pow2_scale, vector, q, scales);
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
