// Row kernels of combine and the references (payload.h): BF16/FP32 rows into FP32 sums and
// FP32 sums back to BF16.
//
// On x86-64 CPUs with AVX-512F the BF16 and FP32 forms run 16 lanes at a time (chosen at run time);
// elsewhere, and for the tails, the scalar loops. Both do the same per-element operations
// (bf16 -> float is exact; acc + scale * v is one rounded multiply and one rounded add: this
// file is compiled with -ffp-contract=off, so no fused multiply-add appears in either form;
// float -> BF16 rounds to nearest even and keeps NaN quiet with its sign), so results are the
// same bits on every CPU; tests/dispatch/row_kernels_test.cc checks them element by element.
#include "payload.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace switchyard::dispatch::detail {

namespace {

void accumulate_bf16_scalar(const uint16_t* v, int64_t n, float scale, float* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += scale * bf16_to_float(v[i]);
}
void add_bf16_scalar(const uint16_t* v, int64_t n, float* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += bf16_to_float(v[i]);
}
void accumulate_f32_scalar(const float* v, int64_t n, float scale, float* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += scale * v[i];
}
void add_f32_scalar(const float* v, int64_t n, float* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += v[i];
}
// Elements [i0, n) of sum_rows: per element, terms in row order from +0.
template <bool kBf16, bool kScaled>
void sum_scalar(const uint8_t* const* rows, const float* scales, int64_t count, int64_t i0, int64_t n, float* acc) {
  for (int64_t i = i0; i < n; ++i) {
    float a = 0.0f;
    for (int64_t c = 0; c < count; ++c) {
      const float v = kBf16 ? bf16_to_float(reinterpret_cast<const uint16_t*>(rows[c])[i])
                            : reinterpret_cast<const float*>(rows[c])[i];
      a = a + (kScaled ? scales[c] * v : v);
    }
    acc[i] = a;
  }
}
void store_bf16_scalar(const float* v, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_from_float(v[i]);
}

#if defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"))) inline __m512 load_bf16x16(const uint16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

__attribute__((target("avx512f"))) void accumulate_bf16_avx512(const uint16_t* v, int64_t n, float scale,
                                                                float* acc) {
  const __m512 s = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(acc + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_mul_ps(s, load_bf16x16(v + i))));
  accumulate_bf16_scalar(v + i, n - i, scale, acc + i);
}

__attribute__((target("avx512f"))) void add_bf16_avx512(const uint16_t* v, int64_t n, float* acc) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(acc + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), load_bf16x16(v + i)));
  add_bf16_scalar(v + i, n - i, acc + i);
}

// FP32 rows: the same per-element operations, 16 lanes at a time.
__attribute__((target("avx512f"))) void accumulate_f32_avx512(const float* v, int64_t n, float scale, float* acc) {
  const __m512 s = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(acc + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_mul_ps(s, _mm512_loadu_ps(v + i))));
  accumulate_f32_scalar(v + i, n - i, scale, acc + i);
}

__attribute__((target("avx512f"))) void add_f32_avx512(const float* v, int64_t n, float* acc) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(acc + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_loadu_ps(v + i)));
  add_f32_scalar(v + i, n - i, acc + i);
}

// bf16_from_float 16 lanes at a time: NaN -> (u >> 16) | 0x40, else (u + 0x7fff + lsb) >> 16.
__attribute__((target("avx512f"))) void store_bf16_avx512(const float* v, int64_t n, uint16_t* out) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf_bits = _mm512_set1_epi32(0x7f800000),
                round = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), quiet = _mm512_set1_epi32(0x40);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(v + i));
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, round), _mm512_and_si512(hi, one)), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf_bits);
    const __m512i r = _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(hi, quiet));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtepi32_epi16(r));
  }
  store_bf16_scalar(v + i, n - i, out + i);
}
#pragma GCC diagnostic pop

template <bool kBf16>
__attribute__((target("avx512f"))) inline __m512 load_x16(const uint8_t* row, int64_t i) {
  return kBf16 ? load_bf16x16(reinterpret_cast<const uint16_t*>(row) + i)
               : _mm512_loadu_ps(reinterpret_cast<const float*>(row) + i);
}

// sum_rows, 64 then 16 elements at a time (four independent chains), then the scalar tail.
template <bool kBf16, bool kScaled>
__attribute__((target("avx512f"))) void sum_avx512(const uint8_t* const* rows, const float* scales, int64_t count,
                                                   int64_t n, float* acc) {
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t c = 0; c < count; ++c) {
      __m512 v0 = load_x16<kBf16>(rows[c], i), v1 = load_x16<kBf16>(rows[c], i + 16);
      __m512 v2 = load_x16<kBf16>(rows[c], i + 32), v3 = load_x16<kBf16>(rows[c], i + 48);
      if (kScaled) {
        const __m512 s = _mm512_set1_ps(scales[c]);
        v0 = _mm512_mul_ps(s, v0);
        v1 = _mm512_mul_ps(s, v1);
        v2 = _mm512_mul_ps(s, v2);
        v3 = _mm512_mul_ps(s, v3);
      }
      a0 = _mm512_add_ps(a0, v0);
      a1 = _mm512_add_ps(a1, v1);
      a2 = _mm512_add_ps(a2, v2);
      a3 = _mm512_add_ps(a3, v3);
    }
    _mm512_storeu_ps(acc + i, a0);
    _mm512_storeu_ps(acc + i + 16, a1);
    _mm512_storeu_ps(acc + i + 32, a2);
    _mm512_storeu_ps(acc + i + 48, a3);
  }
  for (; i + 16 <= n; i += 16) {
    __m512 a = _mm512_setzero_ps();
    for (int64_t c = 0; c < count; ++c) {
      __m512 v = load_x16<kBf16>(rows[c], i);
      if (kScaled) v = _mm512_mul_ps(_mm512_set1_ps(scales[c]), v);
      a = _mm512_add_ps(a, v);
    }
    _mm512_storeu_ps(acc + i, a);
  }
  sum_scalar<kBf16, kScaled>(rows, scales, count, i, n, acc);
}

bool have_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}
#endif

}  // namespace

void accumulate_row(const uint8_t* row, comm::DataType t, int64_t n, float scale, float* acc) {
  if (t == comm::DataType::kFloat32) {
    const float* v = reinterpret_cast<const float*>(row);
#if defined(__x86_64__)
    if (have_avx512()) return accumulate_f32_avx512(v, n, scale, acc);
#endif
    return accumulate_f32_scalar(v, n, scale, acc);
  }
  const uint16_t* v = reinterpret_cast<const uint16_t*>(row);
#if defined(__x86_64__)
  if (have_avx512()) return accumulate_bf16_avx512(v, n, scale, acc);
#endif
  accumulate_bf16_scalar(v, n, scale, acc);
}

void add_row(const uint8_t* row, comm::DataType t, int64_t n, float* acc) {
  if (t == comm::DataType::kFloat32) {
    const float* v = reinterpret_cast<const float*>(row);
#if defined(__x86_64__)
    if (have_avx512()) return add_f32_avx512(v, n, acc);
#endif
    return add_f32_scalar(v, n, acc);
  }
  const uint16_t* v = reinterpret_cast<const uint16_t*>(row);
#if defined(__x86_64__)
  if (have_avx512()) return add_bf16_avx512(v, n, acc);
#endif
  add_bf16_scalar(v, n, acc);
}

void sum_rows(const uint8_t* const* rows, const float* scales, int64_t count, comm::DataType t, int64_t n,
              float* acc) {
  const bool bf16 = t != comm::DataType::kFloat32;
#if defined(__x86_64__)
  if (have_avx512()) {
    if (bf16) return scales ? sum_avx512<true, true>(rows, scales, count, n, acc)
                            : sum_avx512<true, false>(rows, scales, count, n, acc);
    return scales ? sum_avx512<false, true>(rows, scales, count, n, acc)
                  : sum_avx512<false, false>(rows, scales, count, n, acc);
  }
#endif
  if (bf16) return scales ? sum_scalar<true, true>(rows, scales, count, 0, n, acc)
                          : sum_scalar<true, false>(rows, scales, count, 0, n, acc);
  scales ? sum_scalar<false, true>(rows, scales, count, 0, n, acc)
         : sum_scalar<false, false>(rows, scales, count, 0, n, acc);
}

void store_row(const float* v, int64_t n, comm::DataType t, uint8_t* row) {
  if (t == comm::DataType::kFloat32) {
    if (n > 0) std::memcpy(row, v, n * sizeof(float));
    return;
  }
  uint16_t* out = reinterpret_cast<uint16_t*>(row);
#if defined(__x86_64__)
  if (have_avx512()) return store_bf16_avx512(v, n, out);
#endif
  store_bf16_scalar(v, n, out);
}

}  // namespace switchyard::dispatch::detail
