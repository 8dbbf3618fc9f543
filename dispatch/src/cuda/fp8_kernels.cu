// FP8 E4M3 per-1x128 cast on the GPU (kernels.h). One half-warp per tile, each lane owning 8
// consecutive channels: one 16-byte (BF16) or two (FP32) loads and one 8-byte store of codes
// per lane, the half-warp touching one contiguous 256/512-byte input and 128-byte output
// span; the per-tile work (amax shuffles, scale, reciprocal) is shared by 16 lanes instead
// of 32. A warp takes 4 consecutive tiles in two rounds and issues all their loads before
// any arithmetic. The amax is taken on the float bits with NaN mapped to 0 (as the CPU loop
// does), the scale, the division and the codes come from fp8_device.cuh (the codes from the
// hardware E4M3 conversion, two per instruction): bit-identical to
// dispatch::quantize_fp8_tiles. Short last tiles, columns not a multiple of 8 and unaligned
// pointers take a guarded per-element path in the same kernel.
#include <cuda_runtime.h>

#include "fp8_device.cuh"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch::gpu {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kLanesPerTile = 16;                       // a half-warp per tile
constexpr int kPerLane = kFp8TileSize / kLanesPerTile;  // 8 consecutive channels per lane
constexpr int kRounds = 2;                              // tile pairs per warp
constexpr int kTilesPerWarp = 2 * kRounds;
static_assert(kPerLane == 8, "the vector path loads 8 channels and stores 8 codes per lane");

// Eight consecutive values at x + i (i a multiple of 8; the caller checked the alignment).
__device__ __forceinline__ void load8(const float* x, int64_t i, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(x + i), b = *reinterpret_cast<const float4*>(x + i + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(const uint16_t* x, int64_t i, float (&v)[8]) {
  const uint4 b = *reinterpret_cast<const uint4*>(x + i);
  const uint32_t w[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) v[2 * j] = __uint_as_float(w[j] << 16), v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
}
__device__ __forceinline__ float load1(const float* x, int64_t i) { return x[i]; }
__device__ __forceinline__ float load1(const uint16_t* x, int64_t i) { return bf16_to_float_dev(x[i]); }

// Warp w of the grid takes tiles [4w, 4w + 4) in two rounds; in each round the lower
// half-warp takes one tile and the upper half the next. vector: every row start is aligned
// for load8 and the 8-byte code store (cols % 8 == 0 and aligned base pointers); then whole
// tiles take the vector path.
template <class T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    quantize_tiles_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t tiles, bool pow2_scale,
                          bool vector, uint8_t* __restrict__ q, float* __restrict__ scales) {
  const int lane = threadIdx.x % 32, half = lane / kLanesPerTile, sub = lane % kLanesPerTile;
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32) * kTilesPerWarp;
  const int64_t total = rows * tiles;
  float v[kRounds][kPerLane];
  int64_t base[kRounds] = {};  // flat index of this half-warp's tile's first channel
  int n[kRounds] = {};         // channels in the tile (0: past the end)
  // One division per warp (64-bit division is emulated); the next tiles step along the row.
  int64_t r = first / tiles, t = first - (first / tiles) * tiles;
#pragma unroll
  for (int k = 0; k < kTilesPerWarp; ++k) {
    if ((k & 1) == half && first + k < total) {
      const int64_t c0 = t * kFp8TileSize;
      base[k / 2] = r * cols + c0;
      n[k / 2] = static_cast<int>(min(static_cast<int64_t>(kFp8TileSize), cols - c0));
    }
    if (++t == tiles) t = 0, ++r;
  }
#pragma unroll
  for (int w = 0; w < kRounds; ++w) {
    if (vector && n[w] == kFp8TileSize) {
      load8(x, base[w] + kPerLane * sub, v[w]);
    } else {
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int c = kPerLane * sub + j;
        v[w][j] = c < n[w] ? load1(x, base[w] + c) : 0.0f;
      }
    }
  }
#pragma unroll
  for (int w = 0; w < kRounds; ++w) {
    uint32_t amax_bits = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      uint32_t a = __float_as_uint(v[w][j]) & 0x7fffffffu;
      a = a > 0x7f800000u ? 0u : a;
      amax_bits = a > amax_bits ? a : amax_bits;
    }
#pragma unroll
    for (int off = kLanesPerTile / 2; off > 0; off /= 2) {  // within the half-warp
      const uint32_t o = __shfl_xor_sync(0xffffffffu, amax_bits, off);
      amax_bits = o > amax_bits ? o : amax_bits;
    }
    if (n[w] == 0) continue;  // past the end (after the shuffles every lane takes part in)
    const float scale = tile_scale(__uint_as_float(amax_bits), pow2_scale);
    if (sub == 0) scales[first + 2 * w + half] = scale;
    const TileDivider div = make_tile_divider(scale);
    const float lo4[4] = {v[w][0], v[w][1], v[w][2], v[w][3]}, hi4[4] = {v[w][4], v[w][5], v[w][6], v[w][7]};
    const uint32_t lo = tile_codes4(lo4, div), hi = tile_codes4(hi4, div);
    if (vector && n[w] == kFp8TileSize) {
      *reinterpret_cast<uint2*>(q + base[w] + kPerLane * sub) = make_uint2(lo, hi);
    } else {
#pragma unroll
      for (int j = 0; j < kPerLane; ++j)
        if (kPerLane * sub + j < n[w])
          q[base[w] + kPerLane * sub + j] = static_cast<uint8_t>((j < 4 ? lo : hi) >> (8 * (j % 4)));
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
  const bool vector = cols % kPerLane == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
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
