// Tiled FP32 transpose through shared memory (see transpose.h).
#include "transpose.h"

#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kTile = 32;
constexpr int kRows = 8;  // threads per column of a tile: each copies kTile / kRows elements

__global__ void transpose_kernel(const float* __restrict__ src, int64_t rows, int64_t cols, float* __restrict__ dst) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t c0 = int64_t(blockIdx.x) * kTile, r0 = int64_t(blockIdx.y) * kTile;
  for (int i = threadIdx.y; i < kTile; i += kRows) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = src[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += kRows) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;  // dst row c, column r
    if (c < cols && r < rows) dst[c * rows + r] = tile[threadIdx.x][i];
  }
}

}  // namespace

void transpose(const float* src, int64_t rows, int64_t cols, float* dst, cuda::StreamHandle stream) {
  SY_REQUIRE(rows >= 0 && cols >= 0, "transpose: rows = " << rows << ", cols = " << cols << " must be non-negative");
  if (rows == 0 || cols == 0) return;
  SY_REQUIRE((rows + kTile - 1) / kTile < 65536, "transpose: " << rows << " rows is too many for one grid");
  const dim3 grid(unsigned((cols + kTile - 1) / kTile), unsigned((rows + kTile - 1) / kTile));
  transpose_kernel<<<grid, dim3(kTile, kRows), 0, stream>>>(src, rows, cols, dst);
  SY_CUDA_CHECK_LAUNCH("transpose of " << rows << " x " << cols);
}

}  // namespace switchyard::trainer::gpu
