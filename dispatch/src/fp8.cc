// FP8 E4M3 / BF16 conversions and 1x128 tile quantization (rules in fp8.h).
//
// The encoder works on the float's bits: for normal E4M3 results it rounds the 23-bit float
// mantissa to 3 bits with one add (ties to even), letting a carry ripple into the exponent;
// E4M3 subnormals (|x| < 2^-6) are x * 2^9 rounded to an integer, which is exact in float.
// The selection between the cases is branch-free so the tile loops vectorize.
#include "switchyard/dispatch/fp8.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

// The quotient x / scale has x's sign (scale > 0) except when it is a NaN: inf / inf gives
// the platform's default NaN (negative on x86, positive on ARM and CUDA) and a NaN operand
// may lose its sign on a GPU. The code therefore takes the sign of x, which makes every
// code, NaN codes included, the same on every platform (0x7F | sign of x).
inline uint8_t with_sign_of(float x, uint8_t code) {
  return static_cast<uint8_t>((code & 0x7fu) | ((float_bits(x) >> 24) & 0x80u));
}

inline float load_float(const float* x, int64_t i) { return x[i]; }
inline float load_float(const uint16_t* x, int64_t i) { return bf16_to_float(x[i]); }

// One tile (n <= 128 values) the reference way: amax ignoring NaN, then each value divided
// by the scale and encoded, with x's sign. The vector path below falls back to it for tiles
// with an inf or NaN, or a scale so large that its reciprocal underflows.
template <class In>
void quantize_tile_scalar(const In* x, int64_t n, bool pow2_scale, uint8_t* out, float* scale_out) {
  float buf[kFp8TileSize];
  uint32_t amax_bits = 0;  // amax over |x| ignoring NaN, on the bits (same order as the values)
  for (int64_t i = 0; i < n; ++i) {
    buf[i] = load_float(x, i);
    uint32_t a = float_bits(buf[i]) & 0x7fffffffu;
    a = a > 0x7f800000u ? 0u : a;
    amax_bits = a > amax_bits ? a : amax_bits;
  }
  const float scale = fp8_tile_scale(float_from_bits(amax_bits), pow2_scale);
  *scale_out = scale;
  for (int64_t i = 0; i < n; ++i) out[i] = with_sign_of(buf[i], encode(buf[i] / scale));
}

#if defined(__x86_64__)
// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* idiom.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// AVX-512 form of a whole 128-channel tile, bit-identical to quantize_tile_scalar (checked
// by Fp8Test against it and against the brute-force reference), in about 20 vector
// operations per 16 values (the cast is port-bound, so the count is the speed):
//   1. amax of |x| on the bits. A tile holding an inf or NaN (amax bits >= inf), or whose
//      scale is >= 1e30, goes to the scalar path: below that the scale is finite and its
//      reciprocal normal, so the fast steps are exact.
//   2. |x| / scale correctly rounded without a division: q = |x| * r with r = RN(1 / scale),
//      then one Markstein correction q + (|x| - q * scale) * r, both fused, which is the
//      correctly rounded quotient when r is the rounded reciprocal (Markstein 1990; Handbook
//      of Floating-Point Arithmetic, th. 4.11). |x| / scale = |x / scale| in IEEE arithmetic.
//   3. Normal E4M3: round the mantissa to 3 bits, ties to even, and rebias the exponent in
//      one add: (a + 0x7ffff - (120 << 23) + lsb) >> 20 (a >= 2^-6, so no wrap-around);
//      then min with 0x7E saturates everything from 448 up (inf included).
//   4. Subnormal E4M3 (q < 2^-6): q * 2^9 < 8 is exact and is rounded to an integer, ties
//      to even, by the conversion itself (explicit rounding mode, not MXCSR's).
//   5. The sign of x goes into bit 7; vpmovdb packs 16 codes into 16 bytes.
__attribute__((target("avx512f"))) inline __m512 load16(const float* x) { return _mm512_loadu_ps(x); }
__attribute__((target("avx512f"))) inline __m512 load16(const uint16_t* x) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

template <class In>
__attribute__((target("avx512f"))) void quantize_tile_avx512(const In* x, bool pow2_scale, uint8_t* q, float* scale_out) {
  constexpr int kVecs = kFp8TileSize / 16;
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  __m512 v[kVecs];
  __m512i a[kVecs];
  __m512i amax = _mm512_setzero_si512();
  for (int i = 0; i < kVecs; ++i) {
    v[i] = load16(x + 16 * i);
    a[i] = _mm512_and_si512(_mm512_castps_si512(v[i]), abs_mask);
    amax = _mm512_max_epu32(amax, a[i]);  // NaN bits are above inf's: they reach the check
  }
  const uint32_t amax_bits = _mm512_reduce_max_epu32(amax);
  const float scale = amax_bits < 0x7f800000u ? fp8_tile_scale(float_from_bits(amax_bits), pow2_scale) : 0.0f;
  if (amax_bits >= 0x7f800000u || !(scale < 1e30f)) {
    quantize_tile_scalar(x, kFp8TileSize, pow2_scale, q, scale_out);
    return;
  }
  *scale_out = scale;
  const __m512 vscale = _mm512_set1_ps(scale), vrecip = _mm512_set1_ps(1.0f / scale), f512 = _mm512_set1_ps(512.0f);
  const __m512i min_normal = _mm512_set1_epi32(static_cast<int>(kBitsMinNormal)),
                round_rebias = _mm512_set1_epi32(static_cast<int>(0x7ffffu - ((127u - 7u) << 23))),
                one = _mm512_set1_epi32(1), sign_bit7 = _mm512_set1_epi32(0x80),
                max_code = _mm512_set1_epi32(kE4M3MaxCode);
  for (int i = 0; i < kVecs; ++i) {
    const __m512 ax = _mm512_castsi512_ps(a[i]);
    const __m512 q0 = _mm512_mul_ps(ax, vrecip);
    const __m512 quot = _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, vscale, ax), vrecip, q0);
    const __m512i u = _mm512_castps_si512(quot);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 20), one);
    __m512i code = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, round_rebias), lsb), 20);
    code = _mm512_min_epu32(code, max_code);
    const __mmask16 subnormal = _mm512_cmplt_epu32_mask(u, min_normal);
    code = _mm512_mask_cvt_roundps_epi32(code, subnormal, _mm512_mul_ps(quot, f512),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // code | (x bits >> 24) & 0x80
    code = _mm512_ternarylogic_epi32(code, _mm512_srli_epi32(_mm512_castps_si512(v[i]), 24), sign_bit7, 0xf8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * i), _mm512_cvtepi32_epi8(code));
  }
}

#pragma GCC diagnostic pop

bool have_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}
#endif

// Whole tiles through the vector path where the CPU has one; returns true if it did them.
template <class In>
bool quantize_rows_vector(const In* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales) {
#if defined(__x86_64__)
  if (cols % kFp8TileSize != 0 || !have_avx512()) return false;
  const int64_t tiles = cols / kFp8TileSize;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < tiles; ++t)
      quantize_tile_avx512(x + r * cols + t * kFp8TileSize, pow2_scale, q + r * cols + t * kFp8TileSize,
                           scales + r * tiles + t);
  return true;
#else
  (void)x, (void)rows, (void)cols, (void)pow2_scale, (void)q, (void)scales;
  return false;
#endif
}

template <class In>
void quantize_rows(const In* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales) {
  if (rows < 0 || cols < 0)
    SY_THROW(InvalidArgument, "quantize_fp8_tiles: rows = " << rows << ", cols = " << cols << " must be >= 0");
  const int64_t tiles = fp8_num_tiles(cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t c0 = t * kFp8TileSize;
      quantize_tile_scalar(x + r * cols + c0, std::min<int64_t>(kFp8TileSize, cols - c0), pow2_scale, q + r * cols + c0,
                           scales + r * tiles + t);
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
  if (pow2_scale && std::isfinite(scale)) {  // an inf amax keeps an inf scale, as without pow2
    int e = 0;
    const float m = std::frexp(scale, &e);  // scale = m * 2^e, m in [0.5, 1)
    scale = std::ldexp(1.0f, m == 0.5f ? e - 1 : e);
  }
  return scale;
}

void quantize_fp8_tiles(const float* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales) {
  if (rows > 0 && quantize_rows_vector(x, rows, cols, pow2_scale, q, scales)) return;
  quantize_rows(x, rows, cols, pow2_scale, q, scales);
}

void quantize_fp8_tiles(const uint16_t* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales) {
  if (rows > 0 && quantize_rows_vector(x, rows, cols, pow2_scale, q, scales)) return;
  quantize_rows(x, rows, cols, pow2_scale, q, scales);
}

void dequantize_fp8_tiles(const uint8_t* q, const float* scales, int64_t rows, int64_t cols, float* x) {
  const auto& table = e4m3_table();
  const int64_t tiles = fp8_num_tiles(cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      x[r * cols + c] = table[q[r * cols + c]] * scales[r * tiles + c / kFp8TileSize];
}

}  // namespace switchyard::dispatch
