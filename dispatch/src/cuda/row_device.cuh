// Row copies and row sums shared by the dispatch kernels (private to dispatch's CUDA
// sources): a warp moves one row, lanes striding over its words, so every access is a
// warp-wide contiguous run. The sums are the CPU's arithmetic element by element (FP32,
// explicitly rounded, from +0, in list order), so results are bit-identical to the CPU.
#pragma once

#include <cstdint>
#include <type_traits>

#include "fp8_device.cuh"

namespace switchyard::dispatch::gpu {

constexpr int kUnroll = 8;  // words in flight per lane in the copy loops
constexpr int kBatch = 4;   // rows loaded before they are summed

// Copies a row of n words (W) from src to the nd destinations in dst (per-warp shared
// memory, warp-uniform), lanes striding over the words; every word is loaded once and
// kUnroll loads are in flight per lane before the stores.
template <class W>
__device__ __forceinline__ void copy_row(const W* __restrict__ src, int64_t n, uint8_t* const* dst, int nd, int lane) {
  for (int64_t base = lane; base < n; base += 32 * kUnroll) {
    W v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (base + 32 * u < n) v[u] = src[base + 32 * u];
    for (int d = 0; d < nd; ++d) {
      W* out = reinterpret_cast<W*>(dst[d]);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (base + 32 * u < n) out[base + 32 * u] = v[u];
    }
  }
}

// Payload words for the reductions: kVec = 16-byte words (8 BF16 or 4 FP32 values), else
// one element per word.
template <class E, bool kVec>
struct Words {
  using Word = typename std::conditional<kVec, uint4, E>::type;
  static constexpr int kElems = kVec ? 16 / static_cast<int>(sizeof(E)) : 1;
  __device__ static __forceinline__ void to_float(const Word& w, float (&f)[kElems]) {
    if constexpr (!kVec) {
      if constexpr (sizeof(E) == 2)
        f[0] = bf16_to_float_dev(w);
      else
        f[0] = w;
    } else {
      const uint32_t u[4] = {w.x, w.y, w.z, w.w};
      if constexpr (sizeof(E) == 2) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          f[2 * i] = __uint_as_float(u[i] << 16);
          f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
        }
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(u[i]);
      }
    }
  }
  __device__ static __forceinline__ Word from_float(const float (&f)[kElems]) {
    if constexpr (!kVec) {
      if constexpr (sizeof(E) == 2)
        return bf16_from_float_dev(f[0]);
      else
        return f[0];
    } else {
      uint32_t u[4];
      if constexpr (sizeof(E) == 2) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
          u[i] = static_cast<uint32_t>(bf16_from_float_dev(f[2 * i])) |
                 static_cast<uint32_t>(bf16_from_float_dev(f[2 * i + 1])) << 16;
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) u[i] = __float_as_uint(f[i]);
      }
      return make_uint4(u[0], u[1], u[2], u[3]);
    }
  }
};

// out = sum over the n source rows (in list order) of w[a] * src[a] (w == nullptr: plain
// sum), in FP32 with explicitly rounded operations starting from +0, stored in the payload
// type: the CPU's arithmetic, element by element. kBatch rows' words are loaded before any
// is summed.
template <class E, bool kVec>
__device__ __forceinline__ void sum_rows(const uint8_t* const* src, const float* w, int n, uint8_t* dst,
                                         int64_t words, int lane) {
  using V = Words<E, kVec>;
  using Word = typename V::Word;
  for (int64_t i = lane; i < words; i += 32) {
    float acc[V::kElems];
#pragma unroll
    for (int e = 0; e < V::kElems; ++e) acc[e] = 0.0f;
    for (int a0 = 0; a0 < n; a0 += kBatch) {
      Word v[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
        if (a0 + b < n) v[b] = reinterpret_cast<const Word*>(src[a0 + b])[i];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        if (a0 + b >= n) break;
        float f[V::kElems];
        V::to_float(v[b], f);
        if (w != nullptr) {
          const float wb = w[a0 + b];
#pragma unroll
          for (int e = 0; e < V::kElems; ++e) acc[e] = __fadd_rn(acc[e], __fmul_rn(wb, f[e]));
        } else {
#pragma unroll
          for (int e = 0; e < V::kElems; ++e) acc[e] = __fadd_rn(acc[e], f[e]);
        }
      }
    }
    reinterpret_cast<Word*>(dst)[i] = V::from_float(acc);
  }
}

}  // namespace switchyard::dispatch::gpu
