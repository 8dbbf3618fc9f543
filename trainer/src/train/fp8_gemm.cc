// FP8 recipe emulation: tile/block quantization and the group-scaled GEMM (see fp8_gemm.h).
#include "switchyard/trainer/train/fp8_gemm.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "kernels.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::trainer {

namespace {

int64_t num_groups(int64_t n) { return (n + kFp8Group - 1) / kFp8Group; }

// E4M3 code -> float, all 256 codes.
const std::array<float, 256>& decode_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = dispatch::e4m3_to_float(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

std::vector<float> transpose(const float* x, int64_t rows, int64_t cols) {
  std::vector<float> t(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = x[r * cols + c];
  return t;
}

// Transposes the codes and the block scales of a 128x128-block matrix.
Fp8Matrix transpose_blocks(const Fp8Matrix& m) {
  Fp8Matrix t;
  t.rows = m.cols;
  t.cols = m.rows;
  t.blocks = true;
  t.codes.resize(m.codes.size());
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < m.cols; ++c) t.codes[c * m.rows + r] = m.codes[r * m.cols + c];
  int64_t br = num_groups(m.rows), bc = num_groups(m.cols);
  t.scales.resize(br * bc);
  for (int64_t i = 0; i < br; ++i)
    for (int64_t j = 0; j < bc; ++j) t.scales[j * br + i] = m.scales[i * bc + j];
  return t;
}

}  // namespace

float Fp8Matrix::scale(int64_t r, int64_t group) const {
  int64_t g = num_groups(cols);
  return blocks ? scales[(r / kFp8Group) * g + group] : scales[r * g + group];
}

std::vector<float> Fp8Matrix::dequantize() const {
  const auto& table = decode_table();
  std::vector<float> x(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = table[codes[r * cols + c]] * scale(r, c / kFp8Group);
  return x;
}

Fp8Matrix fp8_quantize_rows(const float* x, int64_t rows, int64_t cols, bool pow2_scale) {
  static_assert(kFp8Group == dispatch::kFp8TileSize, "trainer and dispatch FP8 tiles must agree");
  Fp8Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.codes.resize(rows * cols);
  m.scales.resize(rows * num_groups(cols));
  dispatch::quantize_fp8_tiles(x, rows, cols, pow2_scale, m.codes.data(), m.scales.data());
  return m;
}

Fp8Matrix fp8_quantize_blocks(const float* x, int64_t rows, int64_t cols, bool pow2_scale) {
  Fp8Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.blocks = true;
  m.codes.resize(rows * cols);
  int64_t br = num_groups(rows), bc = num_groups(cols);
  m.scales.resize(br * bc);
  for (int64_t i = 0; i < br; ++i) {
    int64_t r0 = i * kFp8Group, r1 = std::min(rows, r0 + kFp8Group);
    for (int64_t j = 0; j < bc; ++j) {
      int64_t c0 = j * kFp8Group, c1 = std::min(cols, c0 + kFp8Group);
      float amax = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(x[r * cols + c]));
      float s = dispatch::fp8_tile_scale(amax, pow2_scale);
      m.scales[i * bc + j] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) m.codes[r * cols + c] = dispatch::e4m3_from_float(x[r * cols + c] / s);
    }
  }
  return m;
}

Fp8Matrix fp8_quantize_columns(const float* x, int64_t rows, int64_t cols, bool pow2_scale) {
  std::vector<float> t = transpose(x, rows, cols);
  return fp8_quantize_rows(t.data(), cols, rows, pow2_scale);
}

Fp8Matrix fp8_quantize_gradient_rows(const float* dy, int64_t rows, int64_t cols, bool pow2_scale) {
  // dy * 2^k is exact in FP32 (no overflow below 2^96, no underflow: the scaled tile is read,
  // not stored subnormal), and so is scale * 2^-k: the codes are those of a tile quantizer whose
  // amax floor is kFp8MinAmax * 2^-k instead of kFp8MinAmax.
  const float up = std::ldexp(1.0f, kFp8GradientShift), down = std::ldexp(1.0f, -kFp8GradientShift);
  std::vector<float> scaled(dy, dy + rows * cols);
  for (float& v : scaled) v *= up;
  Fp8Matrix m = fp8_quantize_rows(scaled.data(), rows, cols, pow2_scale);
  for (float& s : m.scales) s *= down;
  return m;
}

Fp8Matrix fp8_quantize_gradient_columns(const float* dy, int64_t rows, int64_t cols, bool pow2_scale) {
  std::vector<float> t = transpose(dy, rows, cols);
  return fp8_quantize_gradient_rows(t.data(), cols, rows, pow2_scale);
}

void fp8_gemm_nt(const Fp8Matrix& A, const Fp8Matrix& B, float* C, bool accumulate) {
  SY_REQUIRE(A.cols == B.cols, "fp8_gemm_nt: contraction mismatch, A has " << A.cols << " columns, B has " << B.cols);
  const int64_t M = A.rows, N = B.rows, K = A.cols;
  if (!accumulate) std::fill(C, C + M * N, 0.0f);
  if (M == 0 || N == 0 || K == 0) return;
  const auto& table = decode_table();
  std::vector<float> a(M * kFp8Group), b(N * kFp8Group), partial(M * N);
  std::vector<float> sa(M), sb(N);
  for (int64_t g = 0; g < num_groups(K); ++g) {
    int64_t k0 = g * kFp8Group, kg = std::min(K, k0 + kFp8Group) - k0;
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t k = 0; k < kg; ++k) a[m * kg + k] = table[A.codes[m * K + k0 + k]];
      sa[m] = A.scale(m, g);
    }
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < kg; ++k) b[n * kg + k] = table[B.codes[n * K + k0 + k]];
      sb[n] = B.scale(n, g);
    }
    // FP32 partial sums of one 128-wide group, then the group's scales, then accumulate.
    kernels::gemm<float>(false, true, M, N, kg, 1.0f, a.data(), kg, b.data(), kg, 0.0f, partial.data(), N);
    for (int64_t m = 0; m < M; ++m) {
      float* c = C + m * N;
      const float* p = partial.data() + m * N;
      for (int64_t n = 0; n < N; ++n) c[n] += p[n] * (sa[m] * sb[n]);
    }
  }
}

void fp8_linear_forward(const float* x, const float* W, int64_t n, int64_t in, int64_t out, float* y,
                        const Fp8Options& options) {
  Fp8Matrix qx = fp8_quantize_rows(x, n, in, options.pow2_scale);
  Fp8Matrix qw = fp8_quantize_blocks(W, out, in, options.pow2_scale);
  fp8_gemm_nt(qx, qw, y, false);
}

void fp8_linear_backward_input(const float* dy, const float* W, int64_t n, int64_t in, int64_t out, float* dx,
                               bool accumulate, const Fp8Options& options) {
  Fp8Matrix qdy = fp8_quantize_gradient_rows(dy, n, out, options.pow2_scale);
  Fp8Matrix qwt = transpose_blocks(fp8_quantize_blocks(W, out, in, options.pow2_scale));  // [in, out]
  fp8_gemm_nt(qdy, qwt, dx, accumulate);
}

void fp8_linear_backward_weight(const float* dy, const float* x, int64_t n, int64_t in, int64_t out, float* dW,
                                const Fp8Options& options) {
  if (n == 0) return;
  Fp8Matrix qdyt = fp8_quantize_gradient_columns(dy, n, out, options.pow2_scale);  // [out, n], 128 tokens per tile
  Fp8Matrix qxt = fp8_quantize_columns(x, n, in, options.pow2_scale);     // [in, n]
  fp8_gemm_nt(qdyt, qxt, dW, true);
}

}  // namespace switchyard::trainer
