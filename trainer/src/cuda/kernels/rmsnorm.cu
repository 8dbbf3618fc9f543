// RMSNorm forward and backward (kernels::rmsnorm_*), on row slices of stride ld >= c.
//
//   r_i   = 1 / sqrt(sum_j x_ij^2 / c + eps)                       (FP32, eps rounded to FP32)
//   y_ij  = w_j * (x_ij * r_i)
//   dx_ij = (r_i w_j) dy_ij - x_ij k_i,  k_i = r_i^3 sum_j(x_ij w_j dy_ij) / c
//   dw_j += sum_i (dy_ij x_ij) r_i
// Forward and input backward: one block per row, block reductions (tree order; the CPU sums
// left to right, so r differs by FP32 rounding). The products are rounded one by one in
// the CPU's order (no FMA contraction). Weight backward: rstd per row, then partial column
// sums over fixed chunks of rows, then the chunks summed in order into dw.
#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kRowsPerChunk = 64;  // weight backward: rows per partial sum
constexpr int kColTile = 32;       // weight backward: columns per block (one per lane)
constexpr int kRowLanes = 8;       // weight backward: row lanes per block

int threads_for(int64_t c) { return c >= 2048 ? 512 : (c >= 512 ? 256 : 128); }

// 1 / sqrt(mean(x^2) + eps) of one row, reduced over the block.
__device__ float row_rstd(const float* x, int64_t c, float eps) {
  float ss = 0;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) ss += x[j] * x[j];
  ss = detail::block_sum(ss);
  return __fdiv_rn(1.0f, sqrtf(__fadd_rn(__fdiv_rn(ss, float(c)), eps)));
}

__global__ void rmsnorm_forward_kernel(const float* __restrict__ x, int64_t ldx, const float* __restrict__ w,
                                       int64_t c, float eps, float* __restrict__ y, int64_t ldy,
                                       float* __restrict__ rstd) {
  const int64_t i = blockIdx.x;
  const float* xi = x + i * ldx;
  const float r = row_rstd(xi, c, eps);
  float* yi = y + i * ldy;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) yi[j] = __fmul_rn(w[j], __fmul_rn(xi[j], r));
  if (rstd && threadIdx.x == 0) rstd[i] = r;
}

__global__ void rmsnorm_backward_input_kernel(const float* __restrict__ x, int64_t ldx, const float* __restrict__ w,
                                              const float* __restrict__ dy, int64_t lddy, int64_t c, float eps,
                                              float* __restrict__ dx, int64_t lddx, bool accumulate) {
  const int64_t i = blockIdx.x;
  const float* xi = x + i * ldx;
  const float* dyi = dy + i * lddy;
  const float r = row_rstd(xi, c, eps);
  float dot = 0;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dot += __fmul_rn(__fmul_rn(xi[j], w[j]), dyi[j]);
  dot = detail::block_sum(dot);
  const float k = __fdiv_rn(__fmul_rn(__fmul_rn(__fmul_rn(r, r), r), dot), float(c));
  float* dxi = dx + i * lddx;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    const float v = __fsub_rn(__fmul_rn(__fmul_rn(r, w[j]), dyi[j]), __fmul_rn(xi[j], k));
    dxi[j] = accumulate ? __fadd_rn(dxi[j], v) : v;
  }
}

__global__ void rstd_kernel(const float* __restrict__ x, int64_t ldx, int64_t c, float eps, float* __restrict__ rstd) {
  const int64_t i = blockIdx.x;
  const float r = row_rstd(x + i * ldx, c, eps);
  if (threadIdx.x == 0) rstd[i] = r;
}

// partial[chunk, j] = sum over the chunk's rows of (dy_ij x_ij) r_i. Block (32 columns x 8
// row lanes); lane ly sums rows ly, ly + 8, ... of the chunk, then the 8 lanes in order.
__global__ void rmsnorm_dw_partial_kernel(const float* __restrict__ x, int64_t ldx, const float* __restrict__ dy,
                                          int64_t lddy, const float* __restrict__ rstd, int64_t n, int64_t c,
                                          float* __restrict__ partial) {
  __shared__ float lane_sum[kRowLanes][kColTile];
  const int lx = threadIdx.x % kColTile, ly = threadIdx.x / kColTile;
  const int64_t j = blockIdx.x * int64_t(kColTile) + lx;
  const int64_t row0 = blockIdx.y * int64_t(kRowsPerChunk), row1 = min(n, row0 + kRowsPerChunk);
  float s = 0;
  if (j < c)
    for (int64_t i = row0 + ly; i < row1; i += kRowLanes) s += __fmul_rn(__fmul_rn(dy[i * lddy + j], x[i * ldx + j]), rstd[i]);
  lane_sum[ly][lx] = s;
  __syncthreads();
  if (ly == 0 && j < c) {
    float t = lane_sum[0][lx];
    for (int l = 1; l < kRowLanes; ++l) t += lane_sum[l][lx];
    partial[blockIdx.y * c + j] = t;
  }
}

__global__ void rmsnorm_dw_final_kernel(const float* __restrict__ partial, int64_t chunks, int64_t c,
                                        float* __restrict__ dw) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= c) return;
  float s = 0;
  for (int64_t k = 0; k < chunks; ++k) s += partial[k * c + j];
  dw[j] += s;
}

void check_shape(const char* fn, int64_t n, int64_t c, int64_t ldx) {
  SY_GPU_REQUIRE_NONNEG(fn, n);
  SY_GPU_REQUIRE(c >= 1, fn, "c = " << c << " must be >= 1");
  SY_GPU_REQUIRE(ldx >= c, fn, "ldx = " << ldx << " must be >= c = " << c);
  SY_GPU_REQUIRE(n < (int64_t{1} << 31), fn, "n = " << n << " rows is too many for one grid");
}

}  // namespace

void rmsnorm_forward(const float* x, int64_t ldx, const float* w, int64_t n, int64_t c, double eps, float* y,
                     int64_t ldy, float* rstd, cuda::StreamHandle stream) {
  check_shape("rmsnorm_forward", n, c, ldx);
  SY_GPU_REQUIRE(ldy >= c, "rmsnorm_forward", "ldy = " << ldy << " must be >= c = " << c);
  if (n == 0) return;
  rmsnorm_forward_kernel<<<unsigned(n), threads_for(c), 0, stream>>>(x, ldx, w, c, float(eps), y, ldy, rstd);
  SY_CUDA_CHECK_LAUNCH("gpu::rmsnorm_forward of " << n << " x " << c);
}

void rmsnorm_backward_input(const float* x, int64_t ldx, const float* w, const float* dy, int64_t lddy, int64_t n,
                            int64_t c, double eps, float* dx, int64_t lddx, bool accumulate,
                            cuda::StreamHandle stream) {
  check_shape("rmsnorm_backward_input", n, c, ldx);
  SY_GPU_REQUIRE(lddy >= c, "rmsnorm_backward_input", "lddy = " << lddy << " must be >= c = " << c);
  SY_GPU_REQUIRE(lddx >= c, "rmsnorm_backward_input", "lddx = " << lddx << " must be >= c = " << c);
  if (n == 0) return;
  rmsnorm_backward_input_kernel<<<unsigned(n), threads_for(c), 0, stream>>>(x, ldx, w, dy, lddy, c, float(eps), dx,
                                                                           lddx, accumulate);
  SY_CUDA_CHECK_LAUNCH("gpu::rmsnorm_backward_input of " << n << " x " << c);
}

void rmsnorm_backward_weight(const float* x, int64_t ldx, const float* dy, int64_t lddy, int64_t n, int64_t c,
                             double eps, float* dw, cuda::StreamHandle stream) {
  check_shape("rmsnorm_backward_weight", n, c, ldx);
  SY_GPU_REQUIRE(lddy >= c, "rmsnorm_backward_weight", "lddy = " << lddy << " must be >= c = " << c);
  if (n == 0) return;
  const int64_t chunks = (n + kRowsPerChunk - 1) / kRowsPerChunk;
  SY_GPU_REQUIRE(chunks < 65536, "rmsnorm_backward_weight", "n = " << n << " rows is too many");
  detail::StreamScratch rstd(size_t(n) * sizeof(float), stream, "gpu::rmsnorm_backward_weight");
  detail::StreamScratch partial(size_t(chunks * c) * sizeof(float), stream, "gpu::rmsnorm_backward_weight");
  rstd_kernel<<<unsigned(n), threads_for(c), 0, stream>>>(x, ldx, c, float(eps), rstd.as<float>());
  SY_CUDA_CHECK_LAUNCH("gpu::rmsnorm_backward_weight rstd of " << n << " x " << c);
  const dim3 grid(unsigned((c + kColTile - 1) / kColTile), unsigned(chunks));
  rmsnorm_dw_partial_kernel<<<grid, kColTile * kRowLanes, 0, stream>>>(x, ldx, dy, lddy, rstd.as<float>(), n, c,
                                                                       partial.as<float>());
  SY_CUDA_CHECK_LAUNCH("gpu::rmsnorm_backward_weight partial sums of " << n << " x " << c);
  rmsnorm_dw_final_kernel<<<unsigned((c + 255) / 256), 256, 0, stream>>>(partial.as<float>(), chunks, c, dw);
  SY_CUDA_CHECK_LAUNCH("gpu::rmsnorm_backward_weight final sum of " << c);
}

}  // namespace switchyard::trainer::gpu
