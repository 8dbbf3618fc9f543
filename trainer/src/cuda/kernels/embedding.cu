// Token embedding lookup and its gradient (model.cc embed_forward / run_embed_backward).
//
//   forward:  out[t, :] = table[ids[t], :]                     one block per token
//   backward: dtable[v, :] += sum_{t: ids[t] = v} dout[t, :]   one block per vocabulary row
// The backward reads the tokens of row v from a plan grouping tokens by id (stable, so in
// increasing t): the sum has the CPU's order and no atomics are needed.
#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kThreads = 128;

__global__ void embedding_forward_kernel(const float* __restrict__ table, const int64_t* __restrict__ ids, int64_t d,
                                         float* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const float* src = table + ids[t] * d;
  float* dst = out + t * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
}

__global__ void embedding_backward_kernel(const float* __restrict__ dout, const int64_t* __restrict__ order,
                                          const int64_t* __restrict__ offset, int64_t d, float* __restrict__ dtable) {
  const int64_t v = blockIdx.x;
  const int64_t begin = offset[v], end = offset[v + 1];
  if (begin == end) return;
  float* g = dtable + v * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = g[j];
    for (int64_t r = begin; r < end; ++r) acc += dout[order[r] * d + j];
    g[j] = acc;
  }
}

}  // namespace

void embedding_forward(const float* table, const int64_t* ids, int64_t n, int64_t d, float* out,
                       cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("embedding_forward", n);
  SY_GPU_REQUIRE_NONNEG("embedding_forward", d);
  SY_GPU_REQUIRE(n < (int64_t{1} << 31), "embedding_forward", "n = " << n << " tokens is too many for one grid");
  if (n == 0 || d == 0) return;
  embedding_forward_kernel<<<unsigned(n), kThreads, 0, stream>>>(table, ids, d, out);
  SY_CUDA_CHECK_LAUNCH("gpu::embedding_forward of " << n << " x " << d);
}

void embedding_backward(const float* dout, const int64_t* order, const int64_t* offset, int64_t vocab, int64_t d,
                        float* dtable, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("embedding_backward", vocab);
  SY_GPU_REQUIRE_NONNEG("embedding_backward", d);
  SY_GPU_REQUIRE(vocab < (int64_t{1} << 31), "embedding_backward", "vocab = " << vocab << " is too large");
  if (vocab == 0 || d == 0) return;
  embedding_backward_kernel<<<unsigned(vocab), kThreads, 0, stream>>>(dout, order, offset, d, dtable);
  SY_CUDA_CHECK_LAUNCH("gpu::embedding_backward of " << vocab << " x " << d);
}

}  // namespace switchyard::trainer::gpu
