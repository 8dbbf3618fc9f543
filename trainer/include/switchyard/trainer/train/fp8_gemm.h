// CPU emulation of the DeepSeek-V3 FP8 GEMM recipe (../shared/reference/deepseek-v3.md §6).
//
// For a Linear y = x W^T (x [n, in], W [out, in]) the three GEMMs take E4M3 inputs:
//   forward   y  = x  W^T : x in 1x128 tiles along `in`, W in 128x128 blocks;
//   dgrad     dx = dy W   : dy in 1x128 tiles along `out`, W in 128x128 blocks (transposed);
//   wgrad     dW += dy^T x: dy and x in 128x1 tiles (128 tokens of one channel).
// Scales are online: max(amax, floor) / 448 per tile (optionally a power of two), with the
// codec's floor 1e-4 for activations and weights and 1e-4 * 2^-32 for activation gradients
// (see fp8_quantize_gradient_rows). Products
// of one 128-wide contraction group are summed in FP32 and the group's two scales are
// applied to that partial sum, which is then added to an FP32 accumulator, as the H800
// kernels promote partial sums to CUDA cores every 128 elements. Outputs are FP32.
//
// The E4M3 codec and the 1x128 tile quantizer are dispatch/fp8.h's (one codec in the tree).
// Threading: pure functions (the group GEMMs use OpenBLAS threads). Buffers caller-owned.
#pragma once

#include <cstdint>
#include <vector>

namespace switchyard::trainer {

constexpr int64_t kFp8Group = 128;

// A matrix of E4M3 codes with per-tile FP32 scales. rows x cols codes, row-major.
// Row tiles (1x128): scales [rows, ceil(cols/128)]; blocks (128x128):
// scales [ceil(rows/128), ceil(cols/128)].
struct Fp8Matrix {
  int64_t rows = 0, cols = 0;
  bool blocks = false;            // 128x128 blocks instead of 1x128 row tiles
  std::vector<uint8_t> codes;     // [rows * cols]
  std::vector<float> scales;
  float scale(int64_t r, int64_t group) const;  // the scale of element (r, group * 128 ..)
  std::vector<float> dequantize() const;        // [rows, cols] codes * scales
};

// x [rows, cols] -> 1x128 tiles along cols.
Fp8Matrix fp8_quantize_rows(const float* x, int64_t rows, int64_t cols, bool pow2_scale);
// x [rows, cols] -> 128x128 blocks (the scale of a partial block covers only its elements).
Fp8Matrix fp8_quantize_blocks(const float* x, int64_t rows, int64_t cols, bool pow2_scale);
// x [rows, cols] -> 128x1 tiles (128 rows of one column), stored transposed: the result is
// [cols, rows] with 1x128 row tiles, i.e. the layout the wgrad contraction over rows reads.
Fp8Matrix fp8_quantize_columns(const float* x, int64_t rows, int64_t cols, bool pow2_scale);

// Activation gradients: the same tiles with the amax floor moved from 1e-4 to 1e-4 * 2^-32.
// The codec's floor (DeepEP's, meant for activations) can be far above the entries of gradient
// tiles of a loss averaged over thousands of tokens: a tile with amax 1e-4 * 2^-j then uses
// only codes below 448 * 2^-j (j >= 9 leaves subnormals and zeros). The report quantizes dgrad and
// wgrad inputs to E4M3 with online per-tile scales and no loss scaling, which needs this.
constexpr int kFp8GradientShift = 32;
Fp8Matrix fp8_quantize_gradient_rows(const float* dy, int64_t rows, int64_t cols, bool pow2_scale);
Fp8Matrix fp8_quantize_gradient_columns(const float* dy, int64_t rows, int64_t cols, bool pow2_scale);

// C[M, N] (= or +=) sum_g (sum_{k in group g} A[m, k] B[n, k]) * sA(m, g) * sB(n, g), where
// A is [M, K] and B is [N, K] quantized along K (row tiles or blocks). FP32 throughout.
void fp8_gemm_nt(const Fp8Matrix& A, const Fp8Matrix& B, float* C, bool accumulate);

struct Fp8Options {
  bool pow2_scale = false;  // round scales up to powers of two ("UE8M0")
};

// The three GEMMs of a Linear with the recipe above.
// x [n, in], W [out, in] -> y [n, out].
void fp8_linear_forward(const float* x, const float* W, int64_t n, int64_t in, int64_t out, float* y,
                        const Fp8Options& options);
// dy [n, out], W [out, in] -> dx [n, in] (= or +=).
void fp8_linear_backward_input(const float* dy, const float* W, int64_t n, int64_t in, int64_t out, float* dx,
                               bool accumulate, const Fp8Options& options);
// dy [n, out], x [n, in] -> dW [out, in] +=.
void fp8_linear_backward_weight(const float* dy, const float* x, int64_t n, int64_t in, int64_t out, float* dW,
                                const Fp8Options& options);

}  // namespace switchyard::trainer
