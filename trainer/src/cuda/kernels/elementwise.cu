// Element-wise helpers of the GPU model (model_kernels.h): zero, add, scale, strided row
// copies, the FP32 <-> BF16 casts of the BF16 GEMM path, and the double sum of squares of
// gradient clipping. Grid-stride loops; the sum uses a fixed grid, so its order is fixed.
#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

using detail::grid_for;

namespace {

constexpr int kThreads = 256;
constexpr int kSumBlocks = 256;  // fixed: the reduction order must not depend on the device

__global__ void add_inplace_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += x[i];
}

__global__ void add_kernel(const float* a, const float* b, int64_t n, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] + b[i];
}

__global__ void scale_kernel(float* __restrict__ x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = x[i] * s;
}

__global__ void cast_bf16_kernel(const float* __restrict__ x, int64_t n, uint16_t* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = detail::bf16_from_float(x[i]);
}

__global__ void cast_from_bf16_kernel(const uint16_t* __restrict__ x, int64_t n, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = detail::bf16_to_float(x[i]);
}

// partial[block] = sum of double(x)^2 over the block's grid-stride elements.
__global__ void sum_squares_partial_kernel(const float* __restrict__ x, int64_t n, double* __restrict__ partial) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double v = x[i];
    s += v * v;
  }
  s = detail::block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(const double* __restrict__ partial, int count, double* __restrict__ out) {
  double s = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = detail::block_sum(s);
  if (threadIdx.x == 0) out[0] = s;
}

}  // namespace

void fill_zero(float* x, int64_t n, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("fill_zero", n);
  if (n == 0) return;
  SY_CUDA_CHECK(cudaMemsetAsync(x, 0, size_t(n) * sizeof(float), stream), "gpu::fill_zero of " << n << " floats");
}

void add_inplace(float* y, const float* x, int64_t n, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("add_inplace", n);
  if (n == 0) return;
  add_inplace_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(y, x, n);
  SY_CUDA_CHECK_LAUNCH("gpu::add_inplace of " << n);
}

void add(const float* a, const float* b, int64_t n, float* y, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("add", n);
  if (n == 0) return;
  add_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(a, b, n, y);
  SY_CUDA_CHECK_LAUNCH("gpu::add of " << n);
}

void scale_inplace(float* x, int64_t n, float s, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("scale_inplace", n);
  if (n == 0) return;
  scale_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, s);
  SY_CUDA_CHECK_LAUNCH("gpu::scale_inplace of " << n);
}

void copy_rows(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst, int64_t ld_dst,
               cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("copy_rows", rows);
  SY_GPU_REQUIRE_NONNEG("copy_rows", cols);
  SY_GPU_REQUIRE(ld_src >= cols, "copy_rows", "ld_src = " << ld_src << " must be >= cols = " << cols);
  SY_GPU_REQUIRE(ld_dst >= cols, "copy_rows", "ld_dst = " << ld_dst << " must be >= cols = " << cols);
  if (rows == 0 || cols == 0) return;
  SY_CUDA_CHECK(cudaMemcpy2DAsync(dst, size_t(ld_dst) * sizeof(float), src, size_t(ld_src) * sizeof(float),
                                  size_t(cols) * sizeof(float), size_t(rows), cudaMemcpyDeviceToDevice, stream),
                "gpu::copy_rows of " << rows << " x " << cols);
}

void cast_to_bf16(const float* x, int64_t n, uint16_t* y, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("cast_to_bf16", n);
  if (n == 0) return;
  cast_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, y);
  SY_CUDA_CHECK_LAUNCH("gpu::cast_to_bf16 of " << n);
}

void cast_from_bf16(const uint16_t* x, int64_t n, float* y, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("cast_from_bf16", n);
  if (n == 0) return;
  cast_from_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, y);
  SY_CUDA_CHECK_LAUNCH("gpu::cast_from_bf16 of " << n);
}

void sum_squares(const float* x, int64_t n, double* out, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("sum_squares", n);
  detail::StreamScratch partial(kSumBlocks * sizeof(double), stream, "gpu::sum_squares");
  sum_squares_partial_kernel<<<kSumBlocks, kThreads, 0, stream>>>(x, n, partial.as<double>());
  SY_CUDA_CHECK_LAUNCH("gpu::sum_squares of " << n);
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(partial.as<double>(), kSumBlocks, out);
  SY_CUDA_CHECK_LAUNCH("gpu::sum_squares final sum");
}

}  // namespace switchyard::trainer::gpu
