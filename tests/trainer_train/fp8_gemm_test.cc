// FP8 recipe emulation vs an FP64 GEMM of inputs quantized here, tile by tile, from the
// recipe's definition (1x128, 128x128 and 128x1 tiles, scale = max(amax, floor) / 448 with
// floor 1e-4 for activations and weights, 1e-4 * 2^-32 for activation gradients).
#include "switchyard/trainer/train/fp8_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "switchyard/dispatch/fp8.h"
#include "switchyard/trainer/train/linear_backend.h"

namespace switchyard::trainer {
namespace {

std::vector<float> random_matrix(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(rows * cols);
  // Rows and columns of very different magnitudes, so per-tile scales matter.
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = normal(rng) * std::ldexp(1.0f, int((r * 7 + c / 50) % 9) - 4);
  return x;
}

// Dequantized (FP64) copy of x [rows, cols] quantized in tiles of tr x tc elements.
std::vector<double> quantize_reference(const std::vector<float>& x, int64_t rows, int64_t cols, int64_t tr,
                                       int64_t tc, float floor = 1e-4f) {
  std::vector<double> out(rows * cols);
  for (int64_t r0 = 0; r0 < rows; r0 += tr)
    for (int64_t c0 = 0; c0 < cols; c0 += tc) {
      float amax = 0;
      for (int64_t r = r0; r < std::min(rows, r0 + tr); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + tc); ++c) amax = std::max(amax, std::fabs(x[r * cols + c]));
      float scale = std::max(amax, floor) / 448.0f;
      for (int64_t r = r0; r < std::min(rows, r0 + tr); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + tc); ++c)
          out[r * cols + c] = double(dispatch::e4m3_to_float(dispatch::e4m3_from_float(x[r * cols + c] / scale))) *
                              double(scale);
    }
  return out;
}

// C[M, N] = A[M, K] B[N, K]^T in FP64, and S[M, N] = |A| |B|^T (for the error bound).
void gemm_nt_reference(const std::vector<double>& A, const std::vector<double>& B, int64_t M, int64_t N, int64_t K,
                       std::vector<double>& C, std::vector<double>& S) {
  C.assign(M * N, 0.0);
  S.assign(M * N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        C[m * N + n] += A[m * K + k] * B[n * K + k];
        S[m * N + n] += std::fabs(A[m * K + k] * B[n * K + k]);
      }
}

std::vector<double> transpose(const std::vector<double>& x, int64_t rows, int64_t cols) {
  std::vector<double> t(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = x[r * cols + c];
  return t;
}

// FP32 sums of 128 exact products, per-group scaling and the sum over groups:
// |error| <= (128 + groups + 2) u sum |a b|, u = 2^-24.
void expect_within_bound(const std::vector<float>& got, const std::vector<double>& ref, const std::vector<double>& abs,
                         int64_t K, const char* what) {
  const double u = std::ldexp(1.0, -24);
  const double gamma = (128 + (K + 127) / 128 + 2) * u;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::fabs(double(got[i]) - ref[i]);
    ASSERT_LE(err, gamma * abs[i] + 1e-30) << what << " element " << i;
    worst = std::max(worst, err / (abs[i] + 1e-30));
  }
  EXPECT_GT(worst, 0.0) << what << ": suspiciously exact";
}

// The amax floor of activation-gradient tiles.
const float kGradFloor = std::ldexp(1e-4f, -kFp8GradientShift);

constexpr int64_t kN = 150, kIn = 300, kOut = 260;  // none a multiple of 128

TEST(Fp8GemmTest, ForwardMatchesFp64OfTileQuantizedInputs) {
  auto x = random_matrix(kN, kIn, 1), W = random_matrix(kOut, kIn, 2);
  std::vector<float> y(kN * kOut);
  fp8_linear_forward(x.data(), W.data(), kN, kIn, kOut, y.data(), {});
  std::vector<double> ref, abs;
  gemm_nt_reference(quantize_reference(x, kN, kIn, 1, 128), quantize_reference(W, kOut, kIn, 128, 128), kN, kOut, kIn,
                    ref, abs);
  expect_within_bound(y, ref, abs, kIn, "forward");
}

TEST(Fp8GemmTest, InputGradientMatchesFp64OfTileQuantizedInputs) {
  auto dy = random_matrix(kN, kOut, 3), W = random_matrix(kOut, kIn, 4);
  std::vector<float> dx(kN * kIn, 1.0f);
  fp8_linear_backward_input(dy.data(), W.data(), kN, kIn, kOut, dx.data(), /*accumulate=*/true, {});
  std::vector<double> ref, abs;
  auto wq = transpose(quantize_reference(W, kOut, kIn, 128, 128), kOut, kIn);  // [in, out], same blocks
  gemm_nt_reference(quantize_reference(dy, kN, kOut, 1, 128, kGradFloor), wq, kN, kIn, kOut, ref, abs);
  for (auto& v : ref) v += 1.0;  // accumulated onto ones
  for (auto& v : abs) v += 1.0;
  expect_within_bound(dx, ref, abs, kOut, "dgrad");
}

TEST(Fp8GemmTest, WeightGradientUses128x1TilesAlongTokens) {
  auto dy = random_matrix(kN, kOut, 5), x = random_matrix(kN, kIn, 6);
  std::vector<float> dW(kOut * kIn, 0.5f);
  fp8_linear_backward_weight(dy.data(), x.data(), kN, kIn, kOut, dW.data(), {});
  // 128x1 tiles: 128 tokens of one channel.
  auto dyq = transpose(quantize_reference(dy, kN, kOut, 128, 1, kGradFloor), kN, kOut);  // [out, n]
  auto xq = transpose(quantize_reference(x, kN, kIn, 128, 1), kN, kIn);      // [in, n]
  std::vector<double> ref, abs;
  gemm_nt_reference(dyq, xq, kOut, kIn, kN, ref, abs);
  for (auto& v : ref) v += 0.5;
  for (auto& v : abs) v += 0.5;
  expect_within_bound(dW, ref, abs, kN, "wgrad");
}

// Gradients of a loss averaged over many tokens are small: dgrad and wgrad of dy * 2^-30
// (entries ~1e-10, far below the activation floor 1e-4) must be those of dy times 2^-30,
// bit for bit, since power-of-two scaling commutes with the tile quantization above its floor.
// With the activation floor, such tiles would quantize to zeros and subnormal codes.
TEST(Fp8GemmTest, SmallGradientsKeepTheirPrecision) {
  auto dy = random_matrix(kN, kOut, 9), W = random_matrix(kOut, kIn, 10), x = random_matrix(kN, kIn, 11);
  std::vector<float> small(dy);
  for (float& v : small) v = std::ldexp(v, -30);
  std::vector<float> dx(kN * kIn), dx_small(kN * kIn), dW(kOut * kIn, 0.0f), dW_small(kOut * kIn, 0.0f);
  fp8_linear_backward_input(dy.data(), W.data(), kN, kIn, kOut, dx.data(), false, {});
  fp8_linear_backward_input(small.data(), W.data(), kN, kIn, kOut, dx_small.data(), false, {});
  fp8_linear_backward_weight(dy.data(), x.data(), kN, kIn, kOut, dW.data(), {});
  fp8_linear_backward_weight(small.data(), x.data(), kN, kIn, kOut, dW_small.data(), {});
  int64_t nonzero = 0;
  for (size_t i = 0; i < dx.size(); ++i) {
    ASSERT_EQ(dx_small[i], std::ldexp(dx[i], -30)) << "dgrad element " << i;
    nonzero += dx[i] != 0;
  }
  for (size_t i = 0; i < dW.size(); ++i) ASSERT_EQ(dW_small[i], std::ldexp(dW[i], -30)) << "wgrad element " << i;
  EXPECT_GT(nonzero, int64_t(dx.size()) * 9 / 10);
}

TEST(Fp8GemmTest, QuantizationErrorIsWithinE4M3Precision) {
  // Against the unquantized FP64 product: each operand carries <= 2^-4 relative error
  // (3 mantissa bits) plus subnormal spacing, so |y - exact| <= ~2^-3 sum |x w|.
  auto x = random_matrix(64, kIn, 7), W = random_matrix(kOut, kIn, 8);
  std::vector<float> y(64 * kOut);
  fp8_linear_forward(x.data(), W.data(), 64, kIn, kOut, y.data(), {});
  std::vector<double> xd(x.begin(), x.end()), wd(W.begin(), W.end()), ref, abs;
  gemm_nt_reference(xd, wd, 64, kOut, kIn, ref, abs);
  double err2 = 0, ref2 = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    EXPECT_LE(std::fabs(y[i] - ref[i]), 0.13 * abs[i] + 1e-6);
    err2 += (y[i] - ref[i]) * (y[i] - ref[i]);
    ref2 += ref[i] * ref[i];
  }
  EXPECT_LT(std::sqrt(err2 / ref2), 0.05);  // typical error far below the worst case
  EXPECT_GT(std::sqrt(err2 / ref2), 1e-4);  // and the inputs really were quantized
}

TEST(Fp8GemmTest, BlockScalesArePerBlockAmaxAndPowerOfTwoWhenAsked) {
  auto W = random_matrix(kOut, kIn, 9);
  for (bool pow2 : {false, true}) {
    Fp8Matrix q = fp8_quantize_blocks(W.data(), kOut, kIn, pow2);
    ASSERT_EQ(q.scales.size(), size_t(3 * 3));
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 3; ++j) {
        float amax = 0;
        for (int64_t r = i * 128; r < std::min<int64_t>(kOut, i * 128 + 128); ++r)
          for (int64_t c = j * 128; c < std::min<int64_t>(kIn, j * 128 + 128); ++c)
            amax = std::max(amax, std::fabs(W[r * kIn + c]));
        float s = q.scales[i * 3 + j];
        if (!pow2) {
          EXPECT_FLOAT_EQ(s, amax / 448.0f);
        } else {
          int e;
          EXPECT_EQ(std::frexp(s, &e), 0.5f) << "scale " << s << " is not a power of two";
          EXPECT_GE(s, amax / 448.0f);
          EXPECT_LT(s, 2 * amax / 448.0f);
        }
      }
  }
}

TEST(Fp8GemmTest, RecipeCoversLinearsButNotEmbeddingHeadOrGate) {
  EXPECT_TRUE(fp8_recipe_covers("model.layers.0.self_attn.q_a_proj.weight", 2));
  EXPECT_TRUE(fp8_recipe_covers("model.layers.2.mlp.experts.3.down_proj.weight", 2));
  EXPECT_TRUE(fp8_recipe_covers("model.layers.2.mlp.shared_experts.up_proj.weight", 2));
  EXPECT_FALSE(fp8_recipe_covers("model.embed_tokens.weight", 2));
  EXPECT_FALSE(fp8_recipe_covers("lm_head.weight", 2));
  EXPECT_FALSE(fp8_recipe_covers("model.layers.2.mlp.gate.weight", 2));
  EXPECT_FALSE(fp8_recipe_covers("model.layers.0.input_layernorm.weight", 1));
}

}  // namespace
}  // namespace switchyard::trainer
