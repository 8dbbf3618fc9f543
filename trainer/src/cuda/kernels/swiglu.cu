// SwiGLU gate (kernels::swiglu_*), element-wise over [rows, cols] with a row stride for the
// inputs (a and b may be the two halves of one fused gate/up GEMM output):
//   sig = 1 / (1 + exp(-a)),  g = (a sig) b
//   da  = ((dg b) sig) (1 + a (1 - sig)),  db = (dg a) sig
// Products rounded in the CPU's order (no FMA contraction); expf is CUDA's (<= 2 ulp), so
// sig may differ from the CPU's std::exp by an ulp or two.
#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kThreads = 256;

__global__ void swiglu_forward_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t ld_ab,
                                      int64_t rows, int64_t cols, float* __restrict__ g, float* __restrict__ sig) {
  const int64_t total = rows * cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / cols, j = e % cols;
    const float av = a[r * ld_ab + j], bv = b[r * ld_ab + j];
    const float s = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-av)));
    sig[e] = s;
    g[e] = __fmul_rn(__fmul_rn(av, s), bv);
  }
}

__global__ void swiglu_backward_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t ld_ab,
                                       const float* __restrict__ sig, const float* __restrict__ dg, int64_t rows,
                                       int64_t cols, float* __restrict__ da, float* __restrict__ db, int64_t ld_dab) {
  const int64_t total = rows * cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / cols, j = e % cols;
    const float av = a[r * ld_ab + j], bv = b[r * ld_ab + j], s = sig[e], d = dg[e];
    const float silu_grad = __fadd_rn(1.0f, __fmul_rn(av, __fsub_rn(1.0f, s)));
    da[r * ld_dab + j] = __fmul_rn(__fmul_rn(__fmul_rn(d, bv), s), silu_grad);
    db[r * ld_dab + j] = __fmul_rn(__fmul_rn(d, av), s);
  }
}

void check_shape(const char* fn, int64_t rows, int64_t cols, int64_t ld, const char* ld_name) {
  SY_GPU_REQUIRE_NONNEG(fn, rows);
  SY_GPU_REQUIRE_NONNEG(fn, cols);
  SY_GPU_REQUIRE(ld >= cols, fn, ld_name << " = " << ld << " must be >= cols = " << cols);
}

}  // namespace

void swiglu_forward(const float* a, const float* b, int64_t ld_ab, int64_t rows, int64_t cols, float* g, float* sig,
                    cuda::StreamHandle stream) {
  check_shape("swiglu_forward", rows, cols, ld_ab, "ld_ab");
  if (rows == 0 || cols == 0) return;
  swiglu_forward_kernel<<<detail::grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(a, b, ld_ab, rows, cols, g,
                                                                                         sig);
  SY_CUDA_CHECK_LAUNCH("gpu::swiglu_forward of " << rows << " x " << cols);
}

void swiglu_backward(const float* a, const float* b, int64_t ld_ab, const float* sig, const float* dg, int64_t rows,
                     int64_t cols, float* da, float* db, int64_t ld_dab, cuda::StreamHandle stream) {
  check_shape("swiglu_backward", rows, cols, ld_ab, "ld_ab");
  SY_GPU_REQUIRE(ld_dab >= cols, "swiglu_backward", "ld_dab = " << ld_dab << " must be >= cols = " << cols);
  if (rows == 0 || cols == 0) return;
  swiglu_backward_kernel<<<detail::grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(a, b, ld_ab, sig, dg, rows,
                                                                                          cols, da, db, ld_dab);
  SY_CUDA_CHECK_LAUNCH("gpu::swiglu_backward of " << rows << " x " << cols);
}

}  // namespace switchyard::trainer::gpu
