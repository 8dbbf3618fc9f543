// Device versions of the FP8 E4M3 / BF16 conversions of fp8.h (private to dispatch's CUDA
// sources). They are the same bit operations as the CPU encoder in fp8.cc, with every float
// operation written as an explicitly rounded intrinsic (__fmul_rn, __fadd_rn, __fmaf_rn,
// __fdiv_rn) so nvcc cannot contract or reorder them: results are bit-identical to the CPU
// reference.
#pragma once

#include <cstdint>

namespace switchyard::dispatch::gpu {

constexpr uint32_t kDevBits448 = 0x43e00000u;        // 448.0f
constexpr uint32_t kDevBitsMinNormal = 0x3c800000u;  // 2^-6
constexpr float kDevE4M3Max = 448.0f;
constexpr float kDevMinAmax = 1e-4f;

__device__ __forceinline__ uint8_t e4m3_encode(float x) {
  const uint32_t u = __float_as_uint(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t normal = ((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - ((127u - 7u) << 3);
  const float t = __fmul_rn(__uint_as_float(a < kDevBitsMinNormal ? a : kDevBitsMinNormal), 512.0f);
  const uint32_t sub = static_cast<uint32_t>(static_cast<int32_t>(__fadd_rn(__fadd_rn(t, 8388608.0f), -8388608.0f)));
  uint32_t code = a >= kDevBitsMinNormal ? normal : sub;
  code = a >= kDevBits448 ? 0x7Eu : code;
  code = a > 0x7f800000u ? 0x7Fu : code;
  return static_cast<uint8_t>(sign | code);
}

// fp8_tile_scale of fp8.cc: an infinite amax keeps an infinite scale in both modes (frexpf
// of inf is not the CPU's, so the power-of-two rounding is skipped for it, as on the CPU).
__device__ __forceinline__ float tile_scale(float amax, bool pow2_scale) {
  float scale = __fdiv_rn(fmaxf(amax, kDevMinAmax), kDevE4M3Max);
  if (pow2_scale && isfinite(scale)) {
    int e = 0;
    const float m = frexpf(scale, &e);
    scale = ldexpf(1.0f, m == 0.5f ? e - 1 : e);
  }
  return scale;
}

// The correctly rounded x / scale as the CPU's vector path computes it: for scale < 1e30 the
// rounded reciprocal r = RN(1 / scale) and one fused Markstein correction (exact rounding,
// Markstein 1990), else the division. Identical operations to fp8.cc, so identical bits.
struct TileDivider {
  float scale, recip;
  bool markstein;
  __device__ __forceinline__ float operator()(float x) const {
    if (!markstein) return __fdiv_rn(x, scale);
    const float q0 = __fmul_rn(x, recip);
    return __fmaf_rn(__fmaf_rn(-q0, scale, x), recip, q0);
  }
};

__device__ __forceinline__ TileDivider make_tile_divider(float scale) {
  return TileDivider{scale, __fdiv_rn(1.0f, scale), scale < 1e30f};
}

// The codes of four values x[0..3] of a tile, packed little-endian (x[0] in the low byte):
// e4m3(x / scale) with the sign bit of x (fp8.h's rule; inf / inf and NaN quotients are
// canonical positive NaNs on the GPU, so the sign must come from x). The magnitude comes
// from the hardware conversion cvt.rn.satfinite.e4m3x2.f32 (sm_89 and later): round to
// nearest even with E4M3 subnormals, finite values and infinities above 448 saturating to
// 448 (0x7E), NaN giving 0x7F: the rules of e4m3_encode above, in one instruction per pair.
__device__ __forceinline__ uint32_t tile_codes4(const float (&x)[4], const TileDivider& div) {
  uint16_t lo, hi;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(lo) : "f"(div(x[1])), "f"(div(x[0])));
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(hi) : "f"(div(x[3])), "f"(div(x[2])));
  uint32_t sign = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) sign |= (__float_as_uint(x[j]) >> 31) << (8 * j + 7);
  return ((static_cast<uint32_t>(hi) << 16 | lo) & 0x7f7f7f7fu) | sign;
}

__device__ __forceinline__ float bf16_to_float_dev(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

__device__ __forceinline__ uint16_t bf16_from_float_dev(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace switchyard::dispatch::gpu
