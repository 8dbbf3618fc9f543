// cuBLASLt GEMMs against CPU references: BF16 against a naive FP64 loop over the same BF16
// inputs (tolerance: FP32 accumulation, |err| <= 1e-3 * sum|a||b| per element); FP8 with
// block scaling against the trainer's CPU emulation fp8_gemm_nt on the same codes and scales
// (forward: 1x128 x 128x128; wgrad: 1x128 x 1x128), tolerance 1e-3 of the largest |C| (the
// GPU sums the 128-wide groups in another order). Without a GPU: Unsupported or skip.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/trainer/cuda/gemm.h"
#include "switchyard/trainer/train/fp8_gemm.h"

namespace switchyard {
namespace {

using testing::to_device;
using testing::to_host;
namespace tg = trainer::gpu;

std::vector<float> random_matrix(int64_t n, uint32_t seed, float scale) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

TEST(CublasLtGemmTest, WithoutGpuThrowsUnsupported) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present; this checks the no-GPU error path";
  EXPECT_THROW(tg::CublasLt lt, Error);
}

TEST(CublasLtGemmTest, ScaleLayoutConversions) {
  // 3 rows x 2 tiles -> tile-major; 2 x 5 blocks -> rows padded to 8.
  const std::vector<float> rows = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(tg::row128_scales_for_device(rows, 3, 256), (std::vector<float>{1, 3, 5, 2, 4, 6}));
  std::vector<float> blocks(10);
  for (int i = 0; i < 10; ++i) blocks[i] = static_cast<float>(i + 1);
  const auto b = tg::block128_scales_for_device(blocks, 200, 5 * 128);
  ASSERT_EQ(b.size(), 16u);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[4], 5.0f);
  EXPECT_EQ(b[5], 0.0f);
  EXPECT_EQ(b[8], 6.0f);
  EXPECT_THROW(tg::row128_scales_for_device(rows, 4, 256), InvalidArgument);
}

// The general row-major GEMM in all four transpose cases, with leading dimensions wider
// than the matrices, pointers only 4-byte aligned, sizes that are not multiples of 8 and
// beta = 1 (accumulation, which the autotune must not disturb), against a naive FP64 loop.
// FP32 inputs: plain FP32 arithmetic, |err| <= 1e-5 * sum|a||b| (K = 96 products of
// FP32-rounded terms; TF32 would give ~1e-3 and fail). BF16 inputs: the reference uses
// the same BF16-rounded inputs, FP32 accumulation: 1e-5 * sum|ab| as well, and BF16 output
// adds one rounding: 2^-8 of |d|.
TEST(CublasLtGemmTest, GeneralGemmMatchesNaiveLoop) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t M = 37, N = 29, K = 96, pad = 3;
  tg::CublasLt lt;
  for (int in_bf16 = 0; in_bf16 < 2; ++in_bf16)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.0f, 1.0f}) {
          const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, lda = a_cols + pad;
          const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N, ldb = b_cols + pad;
          const int64_t ldd = N + pad;
          auto af = random_matrix(a_rows * lda + 1, 10 + ta, 1.0f), bf = random_matrix(b_rows * ldb + 1, 20 + tb, 1.0f);
          auto d0 = random_matrix(M * ldd + 1, 30, 1.0f);
          if (in_bf16)  // round the inputs to BF16 so the reference sees the same values
            for (auto* v : {&af, &bf})
              for (float& x : *v) x = dispatch::bf16_to_float(dispatch::bf16_from_float(x));
          // Offset by one element: 4-byte (FP32) or 2-byte (BF16) aligned operands.
          cuda::DeviceBuffer da, db;
          if (in_bf16) {
            std::vector<uint16_t> ab(af.size()), bb(bf.size());
            dispatch::bf16_from_float(af.data(), af.size(), ab.data());
            dispatch::bf16_from_float(bf.data(), bf.size(), bb.data());
            da = to_device(ab);
            db = to_device(bb);
          } else {
            da = to_device(af);
            db = to_device(bf);
          }
          auto dd = to_device(d0);
          const size_t esz = in_bf16 ? 2 : 4;
          const void* A = da.as<char>() + esz;
          const void* B = db.as<char>() + esz;
          float* D = dd.as<float>() + 1;
          const float alpha = 0.75f;
          tg::gemm(lt, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, D, ldd,
                   in_bf16 ? tg::DType::kBfloat16 : tg::DType::kFloat32, tg::DType::kFloat32, nullptr);
          cuda::device_synchronize();
          const auto d = to_host<float>(dd, M * ldd + 1);
          double worst = 0;
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              double ref = 0, mag = 0;
              for (int64_t k = 0; k < K; ++k) {
                const double a = af[1 + (ta ? k * lda + m : m * lda + k)];
                const double b = bf[1 + (tb ? n * ldb + k : k * ldb + n)];
                ref += a * b;
                mag += std::fabs(a * b);
              }
              const double c = d0[1 + m * ldd + n];
              ref = alpha * ref + beta * c;
              mag = alpha * mag + std::fabs(beta * c);
              worst = std::max(worst, std::fabs(d[1 + m * ldd + n] - ref) / mag);
            }
          EXPECT_LT(worst, 1e-5) << (in_bf16 ? "bf16" : "fp32") << " trans_a " << ta << " trans_b " << tb << " beta "
                                 << beta;
          // Padding between rows is never written.
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = N; n < ldd && m * ldd + n + 1 < static_cast<int64_t>(d.size()); ++n)
              ASSERT_EQ(d[1 + m * ldd + n], d0[1 + m * ldd + n]) << "row " << m << " pad column " << n;
        }
  EXPECT_THROW(tg::gemm(lt, false, false, M, N, K, 1.0f, nullptr, K, nullptr, N, 0.0f, nullptr, N,
                        tg::DType::kFloat32, tg::DType::kFloat32, nullptr),
               InvalidArgument);
  cuda::DeviceBuffer x(4 * M * K);
  EXPECT_THROW(tg::gemm(lt, false, false, M, N, K, 1.0f, x.data(), K - 1, x.data(), N, 0.0f, x.data(), N,
                        tg::DType::kFloat32, tg::DType::kFloat32, nullptr),
               InvalidArgument);
}

TEST(CublasLtGemmTest, Bf16MatchesNaiveLoop) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t M = 64, N = 96, K = 256;
  const auto af = random_matrix(M * K, 1, 1.0f), bf = random_matrix(N * K, 2, 1.0f);
  std::vector<uint16_t> a(M * K), b(N * K);
  dispatch::bf16_from_float(af.data(), M * K, a.data());
  dispatch::bf16_from_float(bf.data(), N * K, b.data());
  auto da = to_device(a), db = to_device(b);
  cuda::DeviceBuffer dd(M * N * 4);
  tg::CublasLt lt;
  tg::gemm_bf16_nt(lt, da.as<uint16_t>(), db.as<uint16_t>(), dd.data(), tg::OutType::kFloat32, M, N, K, nullptr);
  cuda::device_synchronize();
  const auto d = to_host<float>(dd, M * N);
  double worst = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = double(dispatch::bf16_to_float(a[m * K + k])) * dispatch::bf16_to_float(b[n * K + k]);
        ref += p;
        mag += std::fabs(p);
      }
      worst = std::max(worst, std::fabs(d[m * N + n] - ref) / mag);
    }
  std::printf("bf16 gemm: max |err| / sum|ab| = %.3g\n", worst);
  EXPECT_LT(worst, 1e-3);
}

void check_fp8(const trainer::Fp8Matrix& A, const trainer::Fp8Matrix& B, const char* what) {
  const int64_t M = A.rows, N = B.rows, K = A.cols;
  std::vector<float> want(M * N);
  trainer::fp8_gemm_nt(A, B, want.data(), false);
  auto dac = to_device(A.codes), dbc = to_device(B.codes);
  auto das = to_device(A.blocks ? tg::block128_scales_for_device(A.scales, M, K) : tg::row128_scales_for_device(A.scales, M, K));
  auto dbs = to_device(B.blocks ? tg::block128_scales_for_device(B.scales, N, K) : tg::row128_scales_for_device(B.scales, N, K));
  cuda::DeviceBuffer dd(M * N * 4);
  tg::CublasLt lt;
  tg::Fp8Operand a{dac.as<uint8_t>(), das.as<float>(), A.blocks ? tg::ScaleMode::kBlock128 : tg::ScaleMode::kRow128};
  tg::Fp8Operand b{dbc.as<uint8_t>(), dbs.as<float>(), B.blocks ? tg::ScaleMode::kBlock128 : tg::ScaleMode::kRow128};
  tg::gemm_fp8_nt(lt, a, b, dd.data(), tg::OutType::kFloat32, M, N, K, nullptr);
  cuda::device_synchronize();
  const auto got = to_host<float>(dd, M * N);
  double scale = 0, worst = 0;
  for (float v : want) scale = std::max(scale, double(std::fabs(v)));
  for (int64_t i = 0; i < M * N; ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
  std::printf("%s: max |gpu - cpu emulation| = %.3g (max |C| %.3g)\n", what, worst, scale);
  EXPECT_LE(worst, 1e-3 * scale) << what;
}

TEST(CublasLtGemmTest, Fp8ForwardMatchesCpuEmulation) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t n = 256, in = 384, out = 256;
  // Rows of different magnitudes so wrong scale placement shows.
  auto x = random_matrix(n * in, 3, 1.0f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < in; ++c) x[r * in + c] *= std::ldexp(1.0f, static_cast<int>((r + c / 128) % 7) - 3);
  auto w = random_matrix(out * in, 4, 0.05f);
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c) w[r * in + c] *= std::ldexp(1.0f, static_cast<int>((r / 128 + 2 * (c / 128)) % 5));
  check_fp8(trainer::fp8_quantize_rows(x.data(), n, in, false), trainer::fp8_quantize_blocks(w.data(), out, in, false),
            "fp8 forward 1x128 x 128x128");
  check_fp8(trainer::fp8_quantize_blocks(w.data(), out, in, false), trainer::fp8_quantize_rows(x.data(), n, in, false),
            "fp8 128x128 x 1x128");
}

TEST(CublasLtGemmTest, Fp8WeightGradMatchesCpuEmulation) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t n = 512, in = 256, out = 128;
  const auto dy = random_matrix(n * out, 5, 1.0f), x = random_matrix(n * in, 6, 1.0f);
  // dW [out x in] = dy^T x: both operands quantized along the tokens (128x1 tiles).
  check_fp8(trainer::fp8_quantize_columns(dy.data(), n, out, false),
            trainer::fp8_quantize_columns(x.data(), n, in, false), "fp8 wgrad 1x128 x 1x128");
}

TEST(CublasLtGemmTest, RejectsBlockByBlockAndBadShapes) {
  SY_SKIP_WITHOUT_GPU();
  tg::CublasLt lt;
  cuda::DeviceBuffer buf(1 << 20);
  tg::Fp8Operand blk{buf.as<uint8_t>(), buf.as<float>(), tg::ScaleMode::kBlock128};
  EXPECT_THROW(tg::gemm_fp8_nt(lt, blk, blk, buf.data(), tg::OutType::kFloat32, 128, 128, 128, nullptr), InvalidArgument);
  tg::Fp8Operand row{buf.as<uint8_t>(), buf.as<float>(), tg::ScaleMode::kRow128};
  EXPECT_THROW(tg::gemm_fp8_nt(lt, row, row, buf.data(), tg::OutType::kFloat32, 128, 128, 100, nullptr), InvalidArgument);
}

}  // namespace
}  // namespace switchyard
