// FP8 E4M3 (OCP "e4m3fn") and BF16 conversions, and per-1x128-tile quantization.
//
// E4M3: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN;
// largest finite 448, smallest normal 2^-6, subnormals m * 2^-9.
//   encode: round to nearest, ties to even; |x| > 448 and +-inf saturate to +-448 (0x7E/0xFE);
//           NaN encodes as 0x7F with the sign of the input (0xFF for negative NaN).
//   decode: exact.
// BF16: the top 16 bits of an IEEE float; encode rounds to nearest even, NaN stays a (quiet)
// NaN with its sign.
// Tile quantization (DeepSeek-V3 activations): each row is cut into tiles of kFp8TileSize
// channels (the last one may be shorter); per tile scale = max(amax, 1e-4) / 448, optionally
// rounded up to a power of two (2^ceil(log2 scale), "UE8M0"), and q = e4m3(x / scale) with
// the sign bit of x (an infinite amax gives an infinite scale: codes 0, and for +-inf the
// NaN code 0x7F | sign of x, the same on every platform and on the GPU).
// Dequantize: x = decode(q) * scale.
//
// Threading: pure functions; safe from any thread. Buffers are caller-owned host memory.
#pragma once

#include <cstdint>
#include <cstring>

namespace switchyard::dispatch {

constexpr float kE4M3Max = 448.0f;
constexpr int kFp8TileSize = 128;
constexpr float kFp8MinAmax = 1e-4f;

// Bit codes of +-448, and of NaN (positive sign).
constexpr uint8_t kE4M3MaxCode = 0x7E;
constexpr uint8_t kE4M3NanCode = 0x7F;

inline uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float float_from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// float -> E4M3 code (rules above).
uint8_t e4m3_from_float(float x);
// E4M3 code -> float (exact; 0x7F/0xFF give NaN).
float e4m3_to_float(uint8_t code);

// float -> BF16 bits, round to nearest even.
inline uint16_t bf16_from_float(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t b) { return float_from_bits(static_cast<uint32_t>(b) << 16); }

void bf16_from_float(const float* x, int64_t n, uint16_t* out);
void bf16_to_float(const uint16_t* x, int64_t n, float* out);

// Number of scales per row of `cols` channels: ceil(cols / 128).
inline int64_t fp8_num_tiles(int64_t cols) { return (cols + kFp8TileSize - 1) / kFp8TileSize; }

// Scale for a tile with absolute maximum amax: max(amax, 1e-4) / 448, rounded up to a power
// of two when pow2_scale.
float fp8_tile_scale(float amax, bool pow2_scale);

// x [rows x cols] float or BF16 (row-major) -> q [rows x cols] E4M3 codes and
// scales [rows x fp8_num_tiles(cols)] float.
void quantize_fp8_tiles(const float* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales);
void quantize_fp8_tiles(const uint16_t* x_bf16, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q,
                        float* scales);
// q [rows x cols], scales [rows x fp8_num_tiles(cols)] -> x [rows x cols] float.
void dequantize_fp8_tiles(const uint8_t* q, const float* scales, int64_t rows, int64_t cols, float* x);

}  // namespace switchyard::dispatch
