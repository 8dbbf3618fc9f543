// Shared pieces of the model kernels (model_kernels.h): warp and block reductions with a
// fixed order (deterministic), the stream-ordered scratch buffer, launch-size helpers and
// the argument checks. CUDA sources only.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"

// Throws InvalidArgument "gpu::<fn>: <message>" unless cond.
#define SY_GPU_REQUIRE(cond, fn, stream_expr) SY_REQUIRE(cond, "gpu::" << fn << ": " << stream_expr)
// Requires a named size to be >= 0.
#define SY_GPU_REQUIRE_NONNEG(fn, v) SY_GPU_REQUIRE((v) >= 0, fn, #v " = " << (v) << " must be >= 0")

namespace switchyard::trainer::gpu::detail {

constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, off));
  return v;
}

// Sum over the block; every thread gets the result. blockDim.x a multiple of 32 (<= 1024);
// all threads must call it. The order is fixed (warp butterflies, then the warp partials).
template <class T>
__device__ T block_sum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // a previous call's readers are done with `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  T t = lane < warps ? partial[lane] : T(0);
  return warp_sum(t);
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float t = lane < warps ? partial[lane] : -INFINITY;
  return warp_max(t);
}

// "a before b" of the CPU routers: larger value first, lower index on ties.
__device__ __forceinline__ bool best_first(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// Warp-wide arg-best of (value, index) pairs under best_first; index INT_MAX = none.
__device__ __forceinline__ void warp_arg_best(float& v, int& i) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const float ov = __shfl_xor_sync(kFullMask, v, off);
    const int oi = __shfl_xor_sync(kFullMask, i, off);
    if (best_first(ov, oi, v, i)) v = ov, i = oi;
  }
}

// Float to BF16 bits, round to nearest even, NaN kept quiet (dispatch::bf16_from_float).
__device__ __forceinline__ uint16_t bf16_from_float(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
__device__ __forceinline__ float bf16_to_float(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

// Blocks for a grid-stride loop over n items (capped; the loop covers the rest).
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, int64_t{1} << 16)));
}

// Temporary device memory ordered on a stream (cudaMallocAsync / cudaFreeAsync): usable by
// work enqueued on that stream between construction and destruction.
class StreamScratch {
 public:
  StreamScratch(size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
    if (bytes > 0) SY_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream), what << ": scratch of " << bytes << " bytes");
  }
  ~StreamScratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);  // never throws; a failure surfaces at the next check
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace switchyard::trainer::gpu::detail
