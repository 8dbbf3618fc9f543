// AdamW step with FP32 weights and gradients and BF16 moments (train/optimizer.cc
// AdamW::step), one thread per element. Every operation is rounded in the CPU's order with
// the same FP32 constants (adamw_step_constants), and sqrt and division are IEEE (no
// fast-math), so weights and moments equal the CPU's bit for bit:
//   m = bf16(b1 m + (1 - b1) g);  v = bf16(b2 v + ((1 - b2) g) g)
//   w = (w - (lr (m c1)) / (sqrt(v c2) + eps)) - decay w
#include <cmath>

#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kThreads = 256;

__global__ void adamw_kernel(float* __restrict__ w, const float* __restrict__ g, uint16_t* __restrict__ m,
                             uint16_t* __restrict__ v, int64_t n, AdamWStep s, float decay) {
  using detail::bf16_from_float;
  using detail::bf16_to_float;
  const float one_b1 = __fsub_rn(1.0f, s.beta1), one_b2 = __fsub_rn(1.0f, s.beta2);
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    const float gj = g[j];
    const float mj =
        bf16_to_float(bf16_from_float(__fadd_rn(__fmul_rn(s.beta1, bf16_to_float(m[j])), __fmul_rn(one_b1, gj))));
    const float vj = bf16_to_float(
        bf16_from_float(__fadd_rn(__fmul_rn(s.beta2, bf16_to_float(v[j])), __fmul_rn(__fmul_rn(one_b2, gj), gj))));
    m[j] = bf16_from_float(mj);
    v[j] = bf16_from_float(vj);
    const float wj = w[j];
    const float update =
        __fdiv_rn(__fmul_rn(s.lr, __fmul_rn(mj, s.c1)), __fadd_rn(__fsqrt_rn(__fmul_rn(vj, s.c2)), s.eps));
    w[j] = __fsub_rn(__fsub_rn(wj, update), __fmul_rn(decay, wj));
  }
}

}  // namespace

AdamWStep adamw_step_constants(const AdamWConfig& config, int64_t step, double lr) {
  SY_GPU_REQUIRE(step >= 1, "adamw_step_constants", "step = " << step << " must be >= 1");
  AdamWStep s;
  s.lr = static_cast<float>(lr);
  s.beta1 = static_cast<float>(config.beta1);
  s.beta2 = static_cast<float>(config.beta2);
  s.eps = static_cast<float>(config.eps);
  s.c1 = static_cast<float>(1.0 / (1.0 - std::pow(config.beta1, double(step))));
  s.c2 = static_cast<float>(1.0 / (1.0 - std::pow(config.beta2, double(step))));
  s.decay = s.lr * static_cast<float>(config.weight_decay);
  return s;
}

void adamw_update(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n, const AdamWStep& step,
                  bool apply_decay, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("adamw_update", n);
  if (n == 0) return;
  adamw_kernel<<<detail::grid_for(n, kThreads), kThreads, 0, stream>>>(w, g, m, v, n, step,
                                                                      apply_decay ? step.decay : 0.0f);
  SY_CUDA_CHECK_LAUNCH("gpu::adamw_update of " << n);
}

}  // namespace switchyard::trainer::gpu
