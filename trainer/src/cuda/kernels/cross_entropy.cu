// Softmax cross-entropy over the vocabulary (kernels::cross_entropy_*).
//
//   forward (one block per row): m = max_v z_v, S = sum_v exp(z_v - m), p_v = exp(z_v - m) / S,
//           row loss = log(S) + m - z_target in double; loss = mean of the row losses
//           (rows summed in a fixed tree order by a single block)
//   backward (in place): dlogits = k (p - onehot(target)), k = float(scale / n)
// The max and S are block reductions (the CPU sums left to right): p agrees to FP32
// rounding, the loss to ~1e-7 relative.
#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kThreads = 256;

// probs may alias logits: every element is read and written by the same thread, and z_target
// and the max are read before the first write (block_max synchronises).
__global__ void cross_entropy_row_kernel(const float* logits, const int64_t* __restrict__ targets, int64_t vocab,
                                         float* probs, double* __restrict__ row_loss) {
  const int64_t i = blockIdx.x;
  const float* z = logits + i * vocab;
  float* p = probs + i * vocab;
  const float z_target = z[targets[i]];
  float mx = -INFINITY;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) mx = fmaxf(mx, z[v]);
  mx = detail::block_max(mx);
  float sum = 0;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    const float e = expf(z[v] - mx);
    p[v] = e;
    sum += e;
  }
  sum = detail::block_sum(sum);
  const float inv = __fdiv_rn(1.0f, sum);
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) p[v] = __fmul_rn(p[v], inv);
  if (threadIdx.x == 0) row_loss[i] = log(double(sum)) + double(mx) - double(z_target);
}

__global__ void mean_kernel(const double* __restrict__ x, int64_t n, double* __restrict__ out) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
  s = detail::block_sum(s);
  if (threadIdx.x == 0) out[0] = s / double(n);
}

__global__ void cross_entropy_backward_kernel(float* __restrict__ probs, const int64_t* __restrict__ targets,
                                              int64_t n, int64_t vocab, float k) {
  const int64_t total = n * vocab;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / vocab, v = e % vocab;
    const float g = __fmul_rn(probs[e], k);
    probs[e] = v == targets[i] ? __fsub_rn(g, k) : g;
  }
}

}  // namespace

void cross_entropy_forward(const float* logits, const int64_t* targets, int64_t n, int64_t vocab, float* probs,
                           double* loss, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE(n >= 1 && n < (int64_t{1} << 31), "cross_entropy_forward", "n = " << n << " must be in [1, 2^31)");
  SY_GPU_REQUIRE(vocab >= 1, "cross_entropy_forward", "vocab = " << vocab << " must be >= 1");
  detail::StreamScratch row_loss(size_t(n) * sizeof(double), stream, "gpu::cross_entropy_forward");
  cross_entropy_row_kernel<<<unsigned(n), kThreads, 0, stream>>>(logits, targets, vocab, probs,
                                                                 row_loss.as<double>());
  SY_CUDA_CHECK_LAUNCH("gpu::cross_entropy_forward of " << n << " x " << vocab);
  mean_kernel<<<1, 1024, 0, stream>>>(row_loss.as<double>(), n, loss);
  SY_CUDA_CHECK_LAUNCH("gpu::cross_entropy_forward mean of " << n);
}

void cross_entropy_backward(float* probs, const int64_t* targets, int64_t n, int64_t vocab, double scale,
                            cuda::StreamHandle stream) {
  SY_GPU_REQUIRE(n >= 1, "cross_entropy_backward", "n = " << n << " must be >= 1");
  SY_GPU_REQUIRE(vocab >= 1, "cross_entropy_backward", "vocab = " << vocab << " must be >= 1");
  const float k = static_cast<float>(scale / double(n));
  cross_entropy_backward_kernel<<<detail::grid_for(n * vocab, kThreads), kThreads, 0, stream>>>(probs, targets, n,
                                                                                               vocab, k);
  SY_CUDA_CHECK_LAUNCH("gpu::cross_entropy_backward of " << n << " x " << vocab);
}

}  // namespace switchyard::trainer::gpu
