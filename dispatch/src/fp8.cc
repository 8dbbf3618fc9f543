// FP8 E4M3 / BF16 conversions and 1x128 tile quantization (rules in fp8.h).
//
// The encoder works on the float's bits: for normal E4M3 results it rounds the 23-bit float
// mantissa to 3 bits with one add (ties to even), letting a carry ripple into the exponent;
// E4M3 subnormals (|x| < 2^-6) are x * 2^9 rounded to an integer, which is exact in float.
// The selection between the cases is branch-free so the tile loops vectorize.
#include "switchyard/dispatch/fp8.h"

#include <algorithm>
#include <array>
#include <limits>
#include <cmath>

#include "switchyard/common/error.h"

namespace switchyard::dispatch {

namespace {

constexpr uint32_t kBits448 = 0x43e00000u;        // 448.0f
constexpr uint32_t kBitsMinNormal = 0x3c800000u;  // 2^-6

const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) {
      const int e = (c >> 3) & 15, m = c & 7;
      float v;
      if (e == 15 && m == 7) {
        v = std::numeric_limits<float>::quiet_NaN();
      } else if (e == 0) {
        v = std::ldexp(static_cast<float>(m), -9);
      } else {
        v = std::ldexp(1.0f + m / 8.0f, e - 7);
      }
      t[c] = (c & 0x80) ? -v : v;
    }
    return t;
  }();
  return table;
}

// Branch-free so the tile loops vectorize: both candidate codes are computed and selected.
inline uint8_t encode(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  // Normal E4M3 range: round the float mantissa to 3 bits (ties to even); a carry ripples
  // into the exponent.
  const uint32_t normal = ((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - ((127u - 7u) << 3);
  // Subnormal range: |x| * 2^9 < 8 is exact; adding and subtracting 2^23 rounds it to an
  // integer, ties to even (default rounding mode; no -ffast-math in this file).
  const float t = float_from_bits(a < kBitsMinNormal ? a : kBitsMinNormal) * 512.0f;  // <= 8
  const uint32_t sub = static_cast<uint32_t>(static_cast<int32_t>((t + 8388608.0f) - 8388608.0f));
  const uint32_t is_normal = 0u - static_cast<uint32_t>(a >= kBitsMinNormal);
  const uint32_t is_max = 0u - static_cast<uint32_t>(a >= kBits448);
  const uint32_t is_nan = 0u - static_cast<uint32_t>(a > 0x7f800000u);
  uint32_t code = (normal & is_normal) | (sub & ~is_normal);
  code = (kE4M3MaxCode & is_max) | (code & ~is_max);
  code = (kE4M3NanCode & is_nan) | (code & ~is_nan);
  return static_cast<uint8_t>(sign | code);
}

template <class Load>
void quantize_rows(Load load, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales) {
  if (rows < 0 || cols < 0)
    SY_THROW(InvalidArgument, "quantize_fp8_tiles: rows = " << rows << ", cols = " << cols << " must be >= 0");
  const int64_t tiles = fp8_num_tiles(cols);
  float buf[kFp8TileSize];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t c0 = t * kFp8TileSize, n = std::min<int64_t>(kFp8TileSize, cols - c0);
      // amax over |x| ignoring NaN, on the bits (same order as the values; vectorizes).
      uint32_t amax_bits = 0;
      for (int64_t i = 0; i < n; ++i) {
        buf[i] = load(r * cols + c0 + i);
        uint32_t a = float_bits(buf[i]) & 0x7fffffffu;
        a = a > 0x7f800000u ? 0u : a;
        amax_bits = a > amax_bits ? a : amax_bits;
      }
      const float amax = float_from_bits(amax_bits);
      const float scale = fp8_tile_scale(amax, pow2_scale);
      scales[r * tiles + t] = scale;
      uint8_t* out = q + r * cols + c0;
      for (int64_t i = 0; i < n; ++i) out[i] = encode(buf[i] / scale);
    }
  }
}

}  // namespace

uint8_t e4m3_from_float(float x) { return encode(x); }

float e4m3_to_float(uint8_t code) { return e4m3_table()[code]; }

void bf16_from_float(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_from_float(x[i]);
}

void bf16_to_float(const uint16_t* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(x[i]);
}

float fp8_tile_scale(float amax, bool pow2_scale) {
  float scale = std::max(amax, kFp8MinAmax) / kE4M3Max;
  if (pow2_scale) {
    int e = 0;
    const float m = std::frexp(scale, &e);  // scale = m * 2^e, m in [0.5, 1)
    scale = std::ldexp(1.0f, m == 0.5f ? e - 1 : e);
  }
  return scale;
}

void quantize_fp8_tiles(const float* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales) {
  quantize_rows([x](int64_t i) { return x[i]; }, rows, cols, pow2_scale, q, scales);
}

void quantize_fp8_tiles(const uint16_t* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales) {
  quantize_rows([x](int64_t i) { return bf16_to_float(x[i]); }, rows, cols, pow2_scale, q, scales);
}

void dequantize_fp8_tiles(const uint8_t* q, const float* scales, int64_t rows, int64_t cols, float* x) {
  const auto& table = e4m3_table();
  const int64_t tiles = fp8_num_tiles(cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      x[r * cols + c] = table[q[r * cols + c]] * scales[r * tiles + c / kFp8TileSize];
}

}  // namespace switchyard::dispatch
