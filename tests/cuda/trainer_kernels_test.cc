// The GPU model kernels (trainer/src/cuda/kernels/model_kernels.h) against the CPU functions
// they mirror (trainer/src/kernels.h, router.h, experts.h, train/optimizer.h) or, where the
// CPU code is a private part of a layer (attention, router backward, balance loss), against
// naive loops written here from the formulas in double precision. Inputs are random with
// fixed seeds; sizes include rows longer than a block, lengths that are not multiples of
// the tiles, strided rows (ld > c) and exact ties in the router.
//
// Tolerances (|gpu - ref| <= atol + rtol |ref|, stated per test):
// - exact (bitwise): element-wise code whose FP32 operations the GPU performs in the CPU's
//   order with explicit round-to-nearest intrinsics (RoPE, gathers/combines/scatters,
//   embedding, cross-entropy backward, AdamW, BF16 cast, router selection and weights).
// - rtol 1e-5: results with one FP32 reduction in another order (RMSNorm, cross-entropy
//   probabilities, SwiGLU whose expf may differ from glibc's by 2 ulp).
// - reductions over many rows (norm weight gradient, expert-weight gradient) use a bound of
//   2e-5 times the sum of the absolute terms (the summation-order error of FP32 sums).
// - attention against an FP64 loop: rtol 1e-4 plus 1e-5 of the tensor's largest value (dot
//   products of 96-192 terms and softmax sums of up to 75 keys in FP32).
// On failure each check prints the first mismatching index with both values and the worst
// error, so a log from the GPU machine is enough to debug. Without a GPU the tests skip;
// the argument checks run everywhere the CUDA backend is built (they throw before any call).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/kernels/model_kernels.h"
#include "gpu_test_util.h"
#include "kernels.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/trainer/experts.h"
#include "switchyard/trainer/parameters.h"
#include "switchyard/trainer/router.h"
#include "switchyard/trainer/train/optimizer.h"

namespace switchyard {
namespace {

using testing::to_device;
using testing::to_host;
namespace tg = trainer::gpu;
namespace tk = trainer::kernels;

std::vector<float> randn(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// |got - ref| <= atol + rtol |ref| elementwise; the message names the first failure.
template <class A, class B>
::testing::AssertionResult close(const char* what, const std::vector<A>& got, const std::vector<B>& ref, double rtol,
                                 double atol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << what << ": size " << got.size() << " vs reference " << ref.size();
  size_t bad = 0, first = got.size(), worst = 0;
  double worst_err = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), r = double(ref[i]), err = std::fabs(g - r);
    const bool ok = err <= atol + rtol * std::fabs(r) || (std::isnan(g) && std::isnan(r));
    if (!ok) {
      if (first == got.size()) first = i;
      ++bad;
    }
    if (!(err <= worst_err)) worst_err = err, worst = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream s;
  s.precision(9);
  s << what << ": " << bad << " of " << got.size() << " outside atol " << atol << " + rtol " << rtol
    << "; first at index " << first << ": gpu " << double(got[first]) << " vs ref " << double(ref[first])
    << "; worst at " << worst << ": gpu " << double(got[worst]) << " vs ref " << double(ref[worst]) << " (err "
    << worst_err << ")";
  return ::testing::AssertionFailure() << s.str();
}

// Per-element bound: |got - ref| <= bound[i].
::testing::AssertionResult within(const char* what, const std::vector<float>& got, const std::vector<float>& ref,
                                  const std::vector<double>& bound) {
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - double(ref[i]));
    if (!(err <= bound[i]))
      return ::testing::AssertionFailure() << what << ": first failure at index " << i << ": gpu " << got[i]
                                           << " vs ref " << ref[i] << " (err " << err << ", bound " << bound[i]
                                           << ")";
  }
  return ::testing::AssertionSuccess();
}

// Bitwise equality of two vectors (same element type).
template <class T>
::testing::AssertionResult same(const char* what, const std::vector<T>& got, const std::vector<T>& ref) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << what << ": size " << got.size() << " vs reference " << ref.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &ref[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure() << what << ": first difference at index " << i << ": gpu " << +got[i]
                                           << " vs ref " << +ref[i];
  return ::testing::AssertionSuccess();
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

void sync() { cuda::device_synchronize(); }

// ------------------------------------------------------------------------------------------
// Argument checks (no GPU needed: they throw before any CUDA call)
// ------------------------------------------------------------------------------------------

template <class F>
void expect_invalid(F f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected InvalidArgument mentioning \"" << needle << "\"";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(GpuKernelArgsTest, BadSizesThrowInvalidArgumentNamingTheArgument) {
  expect_invalid([] { tg::rmsnorm_forward(nullptr, 5, nullptr, 3, 10, 1e-6, nullptr, 10, nullptr, nullptr); }, "ldx");
  expect_invalid([] { tg::rmsnorm_forward(nullptr, 10, nullptr, 3, 10, 1e-6, nullptr, 9, nullptr, nullptr); }, "ldy");
  expect_invalid([] { tg::rmsnorm_backward_input(nullptr, 10, nullptr, nullptr, 10, -1, 10, 1e-6, nullptr, 10, false,
                                                 nullptr); },
                 "n = -1");
  expect_invalid([] { tg::rmsnorm_backward_weight(nullptr, 10, nullptr, 4, 3, 10, 1e-6, nullptr, nullptr); }, "lddy");
  expect_invalid([] { tg::rope_apply(nullptr, nullptr, 8, 4, nullptr, 6, 8, nullptr, 8, 8, 2, 1, false, nullptr); },
                 "ld_in");
  expect_invalid([] { tg::swiglu_forward(nullptr, nullptr, 3, 2, 4, nullptr, nullptr, nullptr); }, "ld_ab");
  tg::AttentionShape s{1, 16, 2, 64, 32, 300, 0.1};
  expect_invalid([&] { tg::attention_forward(s, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr); }, "d_v");
  s.d_v = 30;  // not a multiple of 4 (float4 shared-memory reads)
  expect_invalid([&] { tg::attention_forward(s, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr); }, "multiples");
  s.d_v = 64;
  s.seq_len = 0;
  expect_invalid([&] { tg::attention_forward(s, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr); }, "seq_len");
  trainer::RouterConfig rc{16, 4, 3, 2, 2.5, true};  // 3 groups do not divide 16 experts
  expect_invalid([&] { tg::router_forward(rc, nullptr, nullptr, 4, nullptr, nullptr, nullptr, nullptr, nullptr); },
                 "num_groups");
  rc.num_groups = 4;
  rc.top_k = 9;  // more than the 2 kept groups hold
  expect_invalid([&] { tg::router_forward(rc, nullptr, nullptr, 4, nullptr, nullptr, nullptr, nullptr, nullptr); },
                 "top_k");
  rc.top_k = 4;
  expect_invalid([&] { tg::router_backward(rc, nullptr, nullptr, nullptr, 10, reinterpret_cast<const double*>(8), 3,
                                           3, 1.0, nullptr, nullptr); },
                 "batch");
  expect_invalid([] { tg::balance_loss_forward(nullptr, 2, 8, 16, 17, nullptr, nullptr, nullptr, nullptr); }, "top_k");
  expect_invalid([] { tg::moe_gather(nullptr, nullptr, 4, 0, 8, nullptr, nullptr); }, "top_k");
  expect_invalid([] { tg::cross_entropy_forward(nullptr, nullptr, 4, 0, nullptr, nullptr, nullptr); }, "vocab");
  expect_invalid([] { tg::copy_rows(nullptr, 3, 2, 4, nullptr, 4, nullptr); }, "ld_src");
  expect_invalid([] { tg::adamw_step_constants(trainer::AdamWConfig{}, 0, 1e-3); }, "step");
}

// ------------------------------------------------------------------------------------------
// RMSNorm
// ------------------------------------------------------------------------------------------

// Forward and input backward on strided rows (ldx > c, ldy > c, lddx > c) with c longer than
// a block (5000 > 512 threads) and a short row (c = 96); rtol 1e-5 (one FP32 tree sum).
TEST(GpuRmsNormTest, ForwardAndInputBackwardMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  for (int64_t c : {96, 1000, 5000}) {
    SCOPED_TRACE("c = " + std::to_string(c));
    const int64_t n = 37, ldx = c + 3, ldy = c + 1, lddx = c + 5;
    const double eps = 1e-6;
    auto x = randn(n * ldx, 1, 1.5f), w = randn(c, 2), dy = randn(n * c, 3), dx0 = randn(n * lddx, 4);
    std::vector<float> y_cpu(n * c), rstd_cpu(n), dx_cpu = dx0;
    tk::rmsnorm_forward(x.data(), ldx, w.data(), n, c, eps, y_cpu.data(), rstd_cpu.data());
    tk::rmsnorm_backward_input(x.data(), ldx, w.data(), dy.data(), n, c, eps, dx_cpu.data(), lddx, true);

    auto dxb = to_device(x), dwb = to_device(w), ddy = to_device(dy), ddx = to_device(dx0);
    cuda::DeviceBuffer dyb(n * ldy * sizeof(float)), drstd(n * sizeof(float));
    tg::rmsnorm_forward(dxb.as<float>(), ldx, dwb.as<float>(), n, c, eps, dyb.as<float>(), ldy, drstd.as<float>(),
                        nullptr);
    tg::rmsnorm_backward_input(dxb.as<float>(), ldx, dwb.as<float>(), ddy.as<float>(), c, n, c, eps, ddx.as<float>(),
                               lddx, true, nullptr);
    sync();
    auto y_pad = to_host<float>(dyb, n * ldy);
    std::vector<float> y(n * c);
    for (int64_t i = 0; i < n; ++i) std::copy_n(&y_pad[i * ldy], c, &y[i * c]);
    EXPECT_TRUE(close("rmsnorm y", y, y_cpu, 1e-5, 1e-6));
    EXPECT_TRUE(close("rmsnorm rstd", to_host<float>(drstd, n), rstd_cpu, 1e-5, 0));
    // dx: the two terms may cancel; absolute part 1e-5 of the largest |dx|.
    double big = 0;
    for (float v : dx_cpu) big = std::max(big, double(std::fabs(v)));
    EXPECT_TRUE(close("rmsnorm dx (accumulated, lddx > c)", to_host<float>(ddx, n * lddx), dx_cpu, 1e-5, 1e-5 * big));
  }
}

// Weight gradient over 300 rows (4 full chunks of 64 and a partial one) and 700 columns
// (not a multiple of the 32-column tiles), accumulated onto a nonzero dw; the CPU sums the
// rows left to right, the GPU in chunks: bound 2e-5 * sum_i |dy x r| per column.
TEST(GpuRmsNormTest, WeightGradientMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t n = 300, c = 700, ldx = 720, lddy = 710;
  const double eps = 1e-6;
  auto x = randn(n * ldx, 11), dy = randn(n * lddy, 12), dw0 = randn(c, 13);
  std::vector<float> dy_packed(n * c);
  for (int64_t i = 0; i < n; ++i) std::copy_n(&dy[i * lddy], c, &dy_packed[i * c]);
  std::vector<float> dw_cpu = dw0, rstd(n), y(n * c), ones(c, 1.0f);
  tk::rmsnorm_backward_weight(x.data(), ldx, dy_packed.data(), n, c, eps, dw_cpu.data());
  tk::rmsnorm_forward(x.data(), ldx, ones.data(), n, c, eps, y.data(), rstd.data());
  std::vector<double> bound(c, 1e-6);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) bound[j] += 2e-5 * std::fabs(double(dy_packed[i * c + j]) * x[i * ldx + j] * rstd[i]);
  auto dxb = to_device(x), ddy = to_device(dy), ddw = to_device(dw0);
  tg::rmsnorm_backward_weight(dxb.as<float>(), ldx, ddy.as<float>(), lddy, n, c, eps, ddw.as<float>(), nullptr);
  sync();
  const auto dw = to_host<float>(ddw, c);
  EXPECT_TRUE(within("rmsnorm dw", dw, dw_cpu, bound));
  // Deterministic: a second run from the same start gives the same bits.
  ddw.copy_from_host(dw0.data(), c * sizeof(float));
  tg::rmsnorm_backward_weight(dxb.as<float>(), ldx, ddy.as<float>(), lddy, n, c, eps, ddw.as<float>(), nullptr);
  sync();
  EXPECT_TRUE(same("rmsnorm dw rerun", to_host<float>(ddw, c), dw));
}

// ------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// q_pe in place on strided heads and k_pe out of place (the two uses in mla.cc), forward and
// inverse, with a YaRN table. Bitwise: the same FP32 products and sums in the same order.
TEST(GpuRopeTest, StridedHeadsMatchCpuBitwise) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t B = 2, T = 50, N = B * T, H = 3, dn = 16, dr = 32, dqk = dn + dr, rkv = 24;
  const tk::RopeTable table = tk::make_rope_table(T, dr, 10000.0, true, 40.0, 4096, 32.0, 1.0, 1.0, 1.0);
  auto cos_b = to_device(to_float(table.cos)), sin_b = to_device(to_float(table.sin));
  for (bool inverse : {false, true}) {
    SCOPED_TRACE(inverse ? "inverse" : "forward");
    auto q = randn(N * H * dqk, 21), a = randn(N * (rkv + dr), 22);
    std::vector<float> q_cpu = q, kpe_cpu(N * dr);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t h = 0; h < H; ++h) {
        float* pe = &q_cpu[(n * H + h) * dqk + dn];
        tk::rope_apply(table, n % T, pe, pe, inverse);
      }
      tk::rope_apply(table, n % T, &a[n * (rkv + dr) + rkv], &kpe_cpu[n * dr], inverse);
    }
    auto dq = to_device(q), da = to_device(a);
    cuda::DeviceBuffer dkpe(N * dr * sizeof(float));
    tg::rope_apply(cos_b.as<float>(), sin_b.as<float>(), T, dr / 2, dq.as<float>() + dn, H * dqk, dqk,
                   dq.as<float>() + dn, H * dqk, dqk, N, H, inverse, nullptr);
    tg::rope_apply(cos_b.as<float>(), sin_b.as<float>(), T, dr / 2, da.as<float>() + rkv, rkv + dr, 0,
                   dkpe.as<float>(), dr, 0, N, 1, inverse, nullptr);
    sync();
    EXPECT_TRUE(same("rope q (in place, strided heads)", to_host<float>(dq, N * H * dqk), q_cpu));
    EXPECT_TRUE(same("rope k_pe (out of place)", to_host<float>(dkpe, N * dr), kpe_cpu));
  }
}

// ------------------------------------------------------------------------------------------
// SwiGLU
// ------------------------------------------------------------------------------------------

// a and b as the two halves of one [rows, 2F] buffer (ld_ab = 2F), F = 129 (odd), against the
// CPU's flat form on packed copies. rtol 1e-5: expf vs std::exp (<= 2 ulp each).
TEST(GpuSwiGluTest, ForwardAndBackwardMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t rows = 33, F = 129, n = rows * F;
  auto ab = randn(rows * 2 * F, 31, 2.0f), dg = randn(n, 32);
  std::vector<float> a(n), b(n);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(&ab[r * 2 * F], F, &a[r * F]);
    std::copy_n(&ab[r * 2 * F + F], F, &b[r * F]);
  }
  std::vector<float> g_cpu(n), sig_cpu(n), da_cpu(n), db_cpu(n);
  tk::swiglu_forward(a.data(), b.data(), n, g_cpu.data(), sig_cpu.data());
  tk::swiglu_backward(a.data(), b.data(), sig_cpu.data(), dg.data(), n, da_cpu.data(), db_cpu.data());

  auto dab = to_device(ab), ddg = to_device(dg);
  cuda::DeviceBuffer g(n * sizeof(float)), sig(n * sizeof(float)), dab_out(rows * 2 * F * sizeof(float));
  const float* A = dab.as<float>();
  tg::swiglu_forward(A, A + F, 2 * F, rows, F, g.as<float>(), sig.as<float>(), nullptr);
  // The backward gets the CPU's sig, so da/db are checked on their own.
  auto dsig_cpu = to_device(sig_cpu);
  tg::swiglu_backward(A, A + F, 2 * F, dsig_cpu.as<float>(), ddg.as<float>(), rows, F, dab_out.as<float>(),
                      dab_out.as<float>() + F, 2 * F, nullptr);
  sync();
  EXPECT_TRUE(close("swiglu sig", to_host<float>(sig, n), sig_cpu, 1e-5, 0));
  EXPECT_TRUE(close("swiglu g", to_host<float>(g, n), g_cpu, 1e-5, 1e-7));
  const auto d = to_host<float>(dab_out, rows * 2 * F);
  std::vector<float> da(n), db(n);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(&d[r * 2 * F], F, &da[r * F]);
    std::copy_n(&d[r * 2 * F + F], F, &db[r * F]);
  }
  EXPECT_TRUE(same("swiglu da (bitwise, same sig)", da, da_cpu));
  EXPECT_TRUE(same("swiglu db (bitwise, same sig)", db, db_cpu));
}

// ------------------------------------------------------------------------------------------
// Attention
// ------------------------------------------------------------------------------------------

struct AttentionRef {
  std::vector<double> o, lse, dq, dkv, dkpe;
};

// Naive FP64 causal MLA attention and its gradients, from the formulas of mla.cc.
AttentionRef attention_reference(const tg::AttentionShape& s, const std::vector<float>& q,
                                 const std::vector<float>& kv, const std::vector<float>& kpe,
                                 const std::vector<float>& d_o) {
  const int64_t B = s.batch, T = s.seq_len, H = s.heads, dn = s.d_nope, dr = s.d_rope, dv = s.d_v, dqk = dn + dr;
  const int64_t N = B * T, ldq = H * dqk, ldkv = H * (dn + dv), ldo = H * dv;
  const double scale = double(float(s.scale));
  AttentionRef r;
  r.o.assign(N * ldo, 0);
  r.lse.assign(B * H * T, 0);
  r.dq.assign(N * ldq, 0);
  r.dkv.assign(N * ldkv, 0);
  r.dkpe.assign(N * dr, 0);
  auto key = [&](int64_t b, int64_t h, int64_t j, int64_t c) {
    return c < dn ? double(kv[(b * T + j) * ldkv + h * (dn + dv) + c]) : double(kpe[(b * T + j) * dr + c - dn]);
  };
  std::vector<double> P(T), dP(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        const float* qi = &q[(b * T + i) * ldq + h * dqk];
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double sdot = 0;
          for (int64_t c = 0; c < dqk; ++c) sdot += double(qi[c]) * key(b, h, j, c);
          P[j] = scale * sdot;
          mx = std::max(mx, P[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += (P[j] = std::exp(P[j] - mx));
        for (int64_t j = 0; j <= i; ++j) P[j] /= sum;
        r.lse[(b * H + h) * T + i] = mx + std::log(sum);
        double* oi = &r.o[(b * T + i) * ldo + h * dv];
        const float* gi = &d_o[(b * T + i) * ldo + h * dv];
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t c = 0; c < dv; ++c) oi[c] += P[j] * kv[(b * T + j) * ldkv + h * (dn + dv) + dn + c];
        double dot = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double v = 0;
          for (int64_t c = 0; c < dv; ++c) v += double(gi[c]) * kv[(b * T + j) * ldkv + h * (dn + dv) + dn + c];
          dP[j] = v;
          dot += v * P[j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = P[j] * (dP[j] - dot) * scale;
          double* dkv_j = &r.dkv[(b * T + j) * ldkv + h * (dn + dv)];
          for (int64_t c = 0; c < dv; ++c) dkv_j[dn + c] += P[j] * gi[c];
          for (int64_t c = 0; c < dqk; ++c) {
            r.dq[(b * T + i) * ldq + h * dqk + c] += ds * key(b, h, j, c);
            if (c < dn)
              dkv_j[c] += ds * qi[c];
            else
              r.dkpe[(b * T + j) * dr + c - dn] += ds * qi[c];
          }
        }
      }
  return r;
}

void check_attention(const tg::AttentionShape& s, uint32_t seed) {
  const int64_t N = s.batch * s.seq_len, H = s.heads, dqk = s.d_nope + s.d_rope;
  auto q = randn(N * H * dqk, seed), kv = randn(N * H * (s.d_nope + s.d_v), seed + 1),
       kpe = randn(N * s.d_rope, seed + 2), d_o = randn(N * H * s.d_v, seed + 3);
  const AttentionRef ref = attention_reference(s, q, kv, kpe, d_o);
  auto dq_in = to_device(q), dkv_in = to_device(kv), dkpe_in = to_device(kpe), ddo = to_device(d_o);
  cuda::DeviceBuffer o(N * H * s.d_v * sizeof(float)), lse(N * H * sizeof(float)), dq(N * H * dqk * sizeof(float)),
      dkv(N * H * (s.d_nope + s.d_v) * sizeof(float)), dkpe(N * s.d_rope * sizeof(float) + 4);
  tg::attention_forward(s, dq_in.as<float>(), dkv_in.as<float>(), dkpe_in.as<float>(), o.as<float>(), lse.as<float>(),
                        nullptr);
  tg::attention_backward(s, dq_in.as<float>(), dkv_in.as<float>(), dkpe_in.as<float>(), o.as<float>(),
                         lse.as<float>(), ddo.as<float>(), dq.as<float>(), dkv.as<float>(), dkpe.as<float>(), nullptr);
  sync();
  const double rtol = 1e-4, a = 1e-5;
  EXPECT_TRUE(close("attention o", to_host<float>(o, ref.o.size()), ref.o, rtol, a * max_abs(ref.o)));
  EXPECT_TRUE(close("attention lse", to_host<float>(lse, ref.lse.size()), ref.lse, rtol, a * max_abs(ref.lse)));
  EXPECT_TRUE(close("attention dq", to_host<float>(dq, ref.dq.size()), ref.dq, rtol, a * max_abs(ref.dq)));
  EXPECT_TRUE(close("attention dkv", to_host<float>(dkv, ref.dkv.size()), ref.dkv, rtol, a * max_abs(ref.dkv)));
  EXPECT_TRUE(close("attention dk_pe", to_host<float>(dkpe, ref.dkpe.size()), ref.dkpe, rtol, a * max_abs(ref.dkpe)));
}

// The tiny preset's head dims (d_qk = 96 != d_v = 64), seq_len 75 (not a multiple of the
// 32-row tiles), 2 sequences, 3 heads.
TEST(GpuAttentionTest, TinyDimsMatchFp64Reference) {
  SY_SKIP_WITHOUT_GPU();
  check_attention(tg::AttentionShape{2, 75, 3, 64, 32, 64, 1.0 / std::sqrt(96.0)}, 41);
}

// DeepSeek-V3's head dims (d_qk = 192, d_v = 128: the shared-memory opt-in path), seq 33
// (one full tile and one row); dims that are not multiples of the 32-column lane groups
// (d_nope 42, d_rope 6, d_v 24: k_nope/k_pe meet inside a float4 group) and seq 7.
TEST(GpuAttentionTest, V3DimsAndUnevenDimsMatchFp64Reference) {
  SY_SKIP_WITHOUT_GPU();
  check_attention(tg::AttentionShape{1, 33, 2, 128, 64, 128, 1.0 / std::sqrt(192.0) * 1.3}, 51);
  check_attention(tg::AttentionShape{3, 7, 1, 42, 6, 24, 0.2}, 61);
}

// ------------------------------------------------------------------------------------------
// Router
// ------------------------------------------------------------------------------------------

// Logits with many exact ties (a few distinct values, so equal sigmoids and group scores),
// or continuous ones.
std::vector<float> router_logits(int64_t n, int64_t E, uint32_t seed, bool ties) {
  if (!ties) return randn(n * E, seed);
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(-2, 2);
  std::vector<float> v(n * E);
  for (auto& x : v) x = 0.5f * float(d(g));
  return v;
}

void check_router(const trainer::RouterConfig& rc, int64_t n, uint32_t seed, bool ties) {
  SCOPED_TRACE("E = " + std::to_string(rc.num_experts) + ", G = " + std::to_string(rc.num_groups) +
               ", ties = " + std::to_string(ties));
  const int64_t E = rc.num_experts, K = rc.top_k;
  auto logits = router_logits(n, E, seed, ties);
  std::vector<float> bias(E, 0.0f);
  if (!ties) bias = randn(E, seed + 1, 0.1f);
  auto dl = to_device(logits), db = to_device(bias);
  cuda::DeviceBuffer scores(n * E * sizeof(float)), idx(n * K * sizeof(int64_t)), w(n * K * sizeof(float)),
      margin(n * sizeof(double));
  tg::router_forward(rc, dl.as<float>(), db.as<float>(), n, scores.as<float>(), idx.as<int64_t>(), w.as<float>(),
                     margin.as<double>(), nullptr);
  sync();
  const auto s_gpu = to_host<float>(scores, n * E);
  std::vector<float> s_cpu(n * E);
  for (int64_t i = 0; i < n * E; ++i) s_cpu[i] = 1.0f / (1.0f + std::exp(-logits[i]));  // MoeBlock::forward
  EXPECT_TRUE(close("router scores", s_gpu, s_cpu, 1e-6, 0));
  // The selection on the GPU's own scores must be the CPU router's, bit for bit.
  std::vector<int64_t> idx_cpu(n * K);
  std::vector<float> w_cpu(n * K);
  double margin_cpu = 0;
  trainer::route_group_limited(rc, s_gpu.data(), bias.data(), n, idx_cpu.data(), w_cpu.data(), &margin_cpu);
  EXPECT_TRUE(same("router topk_idx", to_host<int64_t>(idx, n * K), idx_cpu));
  EXPECT_TRUE(same("router topk_weight", to_host<float>(w, n * K), w_cpu));
  const auto m = to_host<double>(margin, n);
  EXPECT_EQ(*std::min_element(m.begin(), m.end()), margin_cpu);
}

// The tiny preset's router (16 experts, 4 groups, keep 2, top 4), V3's (256, 8, 4, 8), a
// router without groups and one without normalisation; each with ties and without.
TEST(GpuRouterTest, ForwardMatchesCpuRouterIncludingTies) {
  SY_SKIP_WITHOUT_GPU();
  for (bool ties : {true, false}) {
    check_router(trainer::RouterConfig{16, 4, 4, 2, 2.5, true}, 203, 71, ties);
    check_router(trainer::RouterConfig{256, 8, 8, 4, 2.5, true}, 97, 72, ties);
    check_router(trainer::RouterConfig{64, 6, 1, 1, 1.0, true}, 50, 73, ties);
    check_router(trainer::RouterConfig{32, 3, 4, 3, 1.5, false}, 50, 74, ties);
  }
}

// route_backward of moe.cc written out in double: through the normalised weights and the
// balance term (f from the forward, coef / (T B)).
std::vector<float> router_backward_reference(const trainer::RouterConfig& rc, const std::vector<float>& s,
                                             const std::vector<int64_t>& sel, const std::vector<float>& dw,
                                             const std::vector<double>& f, int64_t B, int64_t T, double coef) {
  const int64_t E = rc.num_experts, K = rc.top_k, N = B * T;
  std::vector<float> out(N * E);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<float> ds(E, 0.0f);
    double S = 0, dot = 0;
    for (int64_t k = 0; k < K; ++k) S += s[n * E + sel[n * K + k]];
    for (int64_t k = 0; k < K; ++k) dot += double(dw[n * K + k]) * s[n * E + sel[n * K + k]];
    for (int64_t k = 0; k < K; ++k)
      ds[sel[n * K + k]] += rc.normalize ? float(rc.route_scale * (dw[n * K + k] / S - dot / (S * S)))
                                         : float(rc.route_scale * dw[n * K + k]);
    if (!f.empty()) {
      double S2 = 0, dot2 = 0;
      const double g0 = coef / double(T * B);
      for (int64_t e = 0; e < E; ++e) S2 += s[n * E + e];
      for (int64_t e = 0; e < E; ++e) dot2 += g0 * f[(n / T) * E + e] * s[n * E + e] / S2;
      for (int64_t e = 0; e < E; ++e) ds[e] += float((g0 * f[(n / T) * E + e] - dot2) / S2);
    }
    for (int64_t e = 0; e < E; ++e) out[n * E + e] = ds[e] * s[n * E + e] * (1.0f - s[n * E + e]);
  }
  return out;
}

// dlogits with and without the balance term, normalised and not; rtol 1e-6 (double sums in
// another order, then one FP32 rounding).
TEST(GpuRouterTest, BackwardMatchesMoeRouteBackward) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t B = 3, T = 41, N = B * T;
  for (bool normalize : {true, false}) {
    const trainer::RouterConfig rc{16, 4, 4, 2, 2.5, normalize};
    const int64_t E = rc.num_experts, K = rc.top_k;
    auto logits = randn(N * E, 81);
    auto dw = randn(N * K, 82);
    auto fv = randn(B * E, 83);
    std::vector<double> f(fv.begin(), fv.end());
    for (auto& x : f) x = std::fabs(x);
    auto dl = to_device(logits), ddw = to_device(dw), df = to_device(f);
    cuda::DeviceBuffer scores(N * E * sizeof(float)), idx(N * K * sizeof(int64_t)), w(N * K * sizeof(float)),
        dlog(N * E * sizeof(float));
    tg::router_forward(rc, dl.as<float>(), nullptr, N, scores.as<float>(), idx.as<int64_t>(), w.as<float>(), nullptr,
                       nullptr);
    sync();
    const auto s = to_host<float>(scores, N * E);
    const auto sel = to_host<int64_t>(idx, N * K);
    for (bool balance : {false, true}) {
      SCOPED_TRACE(std::string("normalize ") + (normalize ? "1" : "0") + ", balance " + (balance ? "1" : "0"));
      const double coef = 0.37;
      tg::router_backward(rc, scores.as<float>(), idx.as<int64_t>(), ddw.as<float>(), N,
                          balance ? df.as<double>() : nullptr, B, T, coef, dlog.as<float>(), nullptr);
      sync();
      const auto ref = router_backward_reference(rc, s, sel, dw, balance ? f : std::vector<double>{}, B, T, coef);
      EXPECT_TRUE(close("router dlogits", to_host<float>(dlog, N * E), ref, 1e-6, 1e-9));
    }
  }
}

// ------------------------------------------------------------------------------------------
// Balance loss
// ------------------------------------------------------------------------------------------

// MoeBlock::forward's loop with trainer::plain_topk on the GPU's inputs: f exact (the same
// double additions in the same order), loss rtol 1e-12 (row sums in another double order),
// the plain top-k margin exact. With ties (quantised scores) and without.
TEST(GpuBalanceLossTest, MatchesCpuLoop) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t B = 3, T = 45, N = B * T, E = 16, K = 4;
  for (bool ties : {false, true}) {
    SCOPED_TRACE(ties ? "ties" : "no ties");
    auto logits = router_logits(N, E, 91, ties);
    std::vector<float> s(N * E);
    for (int64_t i = 0; i < N * E; ++i) s[i] = 1.0f / (1.0f + std::exp(-logits[i]));
    std::vector<double> f_ref(B * E, 0.0), margin_start(N, 0.25);
    double loss_ref = 0, margin_ref = 0.25;
    std::vector<int64_t> top(K);
    for (int64_t b = 0; b < B; ++b) {
      std::vector<double> P(E, 0.0);
      for (int64_t t = b * T; t < (b + 1) * T; ++t) {
        margin_ref = std::min(margin_ref, trainer::plain_topk(&s[t * E], E, K, top.data()));
        for (int64_t k = 0; k < K; ++k) f_ref[b * E + top[k]] += double(E) / double(K * T);
        double sum = 0;
        for (int64_t e = 0; e < E; ++e) sum += double(s[t * E + e]);
        for (int64_t e = 0; e < E; ++e) P[e] += double(s[t * E + e]) / sum / double(T);
      }
      for (int64_t e = 0; e < E; ++e) loss_ref += f_ref[b * E + e] * P[e] / double(B);
    }
    auto ds = to_device(s), dm = to_device(margin_start);
    cuda::DeviceBuffer f(B * E * sizeof(double)), loss(sizeof(double));
    tg::balance_loss_forward(ds.as<float>(), B, T, E, K, f.as<double>(), loss.as<double>(), dm.as<double>(), nullptr);
    sync();
    EXPECT_TRUE(same("balance f", to_host<double>(f, B * E), f_ref));
    EXPECT_TRUE(close("balance loss", to_host<double>(loss, 1), std::vector<double>{loss_ref}, 1e-12, 0));
    const auto m = to_host<double>(dm, N);
    EXPECT_EQ(*std::min_element(m.begin(), m.end()), margin_ref);
  }
}

// ------------------------------------------------------------------------------------------
// MoE permutation
// ------------------------------------------------------------------------------------------

// K distinct experts per token, uniform or skewed to a few experts (so some are empty).
std::vector<int64_t> random_topk(int64_t n, int64_t K, int64_t E, uint32_t seed, bool skewed) {
  std::mt19937 g(seed);
  std::vector<int64_t> idx(n * K), all(E);
  for (int64_t e = 0; e < E; ++e) all[e] = e;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t pool = skewed ? std::min<int64_t>(E, K + 2) : E;
    std::shuffle(all.begin(), all.begin() + pool, g);
    std::copy_n(all.begin(), K, &idx[t * K]);
  }
  return idx;
}

// The device plan equals make_routing_plan (offsets, order; position its inverse), also at
// the embedding's size (K = 1, E = 4096 ids over two plan blocks of experts).
TEST(GpuMoePermuteTest, RoutingPlanMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  struct Case {
    int64_t n, K, E;
    bool skewed;
  };
  for (const Case& c : {Case{300, 4, 16, false}, Case{257, 8, 64, true}, Case{3000, 1, 4096, false},
                        Case{5000, 2, 16, false}}) {
    SCOPED_TRACE("n = " + std::to_string(c.n) + ", E = " + std::to_string(c.E));
    const auto idx = random_topk(c.n, c.K, c.E, uint32_t(c.n), c.skewed);
    const trainer::RoutingPlan plan = trainer::make_routing_plan(idx.data(), c.n, c.K, c.E);
    auto didx = to_device(idx);
    cuda::DeviceBuffer offset((c.E + 1) * sizeof(int64_t)), order(c.n * c.K * sizeof(int64_t)),
        position(c.n * c.K * sizeof(int64_t));
    tg::moe_routing_plan(didx.as<int64_t>(), c.n, c.K, c.E, offset.as<int64_t>(), order.as<int64_t>(),
                         position.as<int64_t>(), nullptr);
    sync();
    EXPECT_TRUE(same("plan expert_offset", to_host<int64_t>(offset, c.E + 1), plan.expert_offset));
    EXPECT_TRUE(same("plan order", to_host<int64_t>(order, c.n * c.K), plan.order));
    const auto pos = to_host<int64_t>(position, c.n * c.K);
    std::vector<int64_t> pos_ref(c.n * c.K);
    for (int64_t r = 0; r < c.n * c.K; ++r) pos_ref[plan.order[r]] = r;
    EXPECT_TRUE(same("plan position", pos, pos_ref));
  }
}

// Gather, gather backward, combine and combine backward against the CPU loops of
// LocalExperts and MoeBlock (bitwise: the same FP32 operations in the same order), and the
// expert-weight gradient with the FP32 summation-order bound.
TEST(GpuMoePermuteTest, GatherCombineAndBackwardsMatchCpuLoops) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t n = 211, K = 4, E = 16, d = 300, rows = n * K;
  const auto idx = random_topk(n, K, E, 101, false);
  const trainer::RoutingPlan plan = trainer::make_routing_plan(idx.data(), n, K, E);
  auto x = randn(n * d, 102), y_sorted = randn(rows * d, 103), w = randn(n * K, 104), y0 = randn(n * d, 105),
       dy = randn(n * d, 106), dx_sorted = randn(rows * d, 107), dx0 = randn(n * d, 108);
  // CPU references.
  std::vector<float> xs_ref(rows * d), dx_ref = dx0, y_ref = y0, dys_ref(rows * d), dw_ref(n * K);
  std::vector<double> dw_bound(n * K, 1e-6);
  std::vector<int64_t> pos(rows);
  for (int64_t r = 0; r < rows; ++r) pos[plan.order[r]] = r;
  for (int64_t r = 0; r < rows; ++r) std::copy_n(&x[(plan.order[r] / K) * d], d, &xs_ref[r * d]);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < d; ++j) dx_ref[(plan.order[r] / K) * d + j] += dx_sorted[r * d + j];
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const float wk = w[t * K + k];
      const float* o = &y_sorted[pos[t * K + k] * d];
      float dot = 0;
      for (int64_t j = 0; j < d; ++j) {
        y_ref[t * d + j] += wk * o[j];
        dot += dy[t * d + j] * o[j];
        dys_ref[pos[t * K + k] * d + j] = wk * dy[t * d + j];
        dw_bound[t * K + k] += 2e-5 * std::fabs(double(dy[t * d + j]) * o[j]);
      }
      dw_ref[t * K + k] = dot;
    }
  auto dorder = to_device(plan.order), dpos = to_device(pos), dxb = to_device(x), dys = to_device(y_sorted),
       dwb = to_device(w), dyb = to_device(y0), ddy = to_device(dy), ddxs = to_device(dx_sorted), ddx = to_device(dx0);
  cuda::DeviceBuffer xs(rows * d * sizeof(float)), dys_out(rows * d * sizeof(float)), dw_out(n * K * sizeof(float));
  tg::moe_gather(dxb.as<float>(), dorder.as<int64_t>(), n, K, d, xs.as<float>(), nullptr);
  tg::moe_gather_backward(ddxs.as<float>(), dpos.as<int64_t>(), n, K, d, ddx.as<float>(), nullptr);
  tg::moe_combine(dys.as<float>(), dwb.as<float>(), dpos.as<int64_t>(), n, K, d, dyb.as<float>(), nullptr);
  tg::moe_combine_backward(ddy.as<float>(), dys.as<float>(), dwb.as<float>(), dpos.as<int64_t>(), n, K, d,
                           dys_out.as<float>(), dw_out.as<float>(), nullptr);
  sync();
  EXPECT_TRUE(same("moe_gather", to_host<float>(xs, rows * d), xs_ref));
  EXPECT_TRUE(same("moe_gather_backward", to_host<float>(ddx, n * d), dx_ref));
  EXPECT_TRUE(same("moe_combine", to_host<float>(dyb, n * d), y_ref));
  EXPECT_TRUE(same("moe_combine_backward dy_sorted", to_host<float>(dys_out, rows * d), dys_ref));
  EXPECT_TRUE(within("moe_combine_backward d_weight", to_host<float>(dw_out, n * K), dw_ref, dw_bound));
}

// ------------------------------------------------------------------------------------------
// Embedding
// ------------------------------------------------------------------------------------------

// Lookup and scatter-add with repeated ids (50 ids for 300 tokens), the plan from the device;
// bitwise against model.cc's loops (the sum runs in token order on both).
TEST(GpuEmbeddingTest, ForwardAndBackwardMatchCpuLoops) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t V = 50, n = 300, d = 130;
  std::mt19937 g(111);
  std::uniform_int_distribution<int64_t> pick(0, V - 1);
  std::vector<int64_t> ids(n);
  for (auto& t : ids) t = pick(g);
  auto table = randn(V * d, 112), dout = randn(n * d, 113), dtable0 = randn(V * d, 114);
  std::vector<float> out_ref(n * d), dtable_ref = dtable0;
  for (int64_t t = 0; t < n; ++t) std::copy_n(&table[ids[t] * d], d, &out_ref[t * d]);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < d; ++j) dtable_ref[ids[t] * d + j] += dout[t * d + j];
  auto dids = to_device(ids), dtab = to_device(table), ddout = to_device(dout), ddtab = to_device(dtable0);
  cuda::DeviceBuffer out(n * d * sizeof(float)), offset((V + 1) * sizeof(int64_t)), order(n * sizeof(int64_t));
  tg::embedding_forward(dtab.as<float>(), dids.as<int64_t>(), n, d, out.as<float>(), nullptr);
  tg::moe_routing_plan(dids.as<int64_t>(), n, 1, V, offset.as<int64_t>(), order.as<int64_t>(), nullptr, nullptr);
  tg::embedding_backward(ddout.as<float>(), order.as<int64_t>(), offset.as<int64_t>(), V, d, ddtab.as<float>(),
                         nullptr);
  sync();
  EXPECT_TRUE(same("embedding forward", to_host<float>(out, n * d), out_ref));
  EXPECT_TRUE(same("embedding backward", to_host<float>(ddtab, V * d), dtable_ref));
}

// ------------------------------------------------------------------------------------------
// Cross-entropy
// ------------------------------------------------------------------------------------------

// V = 5000 (rows much longer than a block), out of place and in place; probabilities rtol
// 1e-5, loss rtol 1e-6 (FP32 sums in another order); backward bitwise on the same probs.
TEST(GpuCrossEntropyTest, ForwardAndBackwardMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t n = 37, V = 5000;
  auto logits = randn(n * V, 121, 3.0f);
  std::mt19937 g(122);
  std::uniform_int_distribution<int64_t> pick(0, V - 1);
  std::vector<int64_t> targets(n);
  for (auto& t : targets) t = pick(g);
  std::vector<float> probs_cpu(n * V);
  const double loss_cpu = tk::cross_entropy_forward(logits.data(), targets.data(), n, V, probs_cpu.data());
  auto dl = to_device(logits), dt = to_device(targets);
  cuda::DeviceBuffer probs(n * V * sizeof(float)), loss(sizeof(double));
  for (bool in_place : {false, true}) {
    SCOPED_TRACE(in_place ? "in place" : "out of place");
    float* p = in_place ? dl.as<float>() : probs.as<float>();
    tg::cross_entropy_forward(dl.as<float>(), dt.as<int64_t>(), n, V, p, loss.as<double>(), nullptr);
    sync();
    const auto probs_gpu = in_place ? to_host<float>(dl, n * V) : to_host<float>(probs, n * V);
    EXPECT_TRUE(close("cross-entropy probs", probs_gpu, probs_cpu, 1e-5, 1e-12));
    EXPECT_TRUE(close("cross-entropy loss", to_host<double>(loss, 1), std::vector<double>{loss_cpu}, 1e-6, 0));
    // Backward on the GPU's probabilities, against the CPU's backward on the same values.
    std::vector<float> grad_cpu = probs_gpu;
    tk::cross_entropy_backward(grad_cpu.data(), targets.data(), n, V, 0.3);
    tg::cross_entropy_backward(p, dt.as<int64_t>(), n, V, 0.3, nullptr);
    sync();
    EXPECT_TRUE(same("cross-entropy backward", in_place ? to_host<float>(dl, n * V) : to_host<float>(probs, n * V),
                     grad_cpu));
    dl.copy_from_host(logits.data(), logits.size() * sizeof(float));
  }
}

// ------------------------------------------------------------------------------------------
// AdamW
// ------------------------------------------------------------------------------------------

// Three steps of trainer::AdamW (a matrix with weight decay and a norm weight without) and
// of adamw_update per parameter: weights and BF16 moments bitwise equal.
TEST(GpuAdamWTest, StepsMatchCpuOptimizerBitwise) {
  SY_SKIP_WITHOUT_GPU();
  trainer::ParameterSet<float> params;
  auto* mat = params.add("layer.weight", {37, 29});
  auto* norm = params.add("layer.norm.weight", {29});
  mat->value = randn(mat->numel(), 131);
  norm->value = randn(norm->numel(), 132);
  const trainer::AdamWConfig config{0.9, 0.95, 1e-8, 0.1};
  trainer::AdamW opt(params, config);
  std::vector<cuda::DeviceBuffer> w, g, m, v;
  for (const auto& p : params.all()) {
    w.push_back(to_device(p->value));
    m.push_back(to_device(std::vector<uint16_t>(p->numel(), 0)));
    v.push_back(to_device(std::vector<uint16_t>(p->numel(), 0)));
    g.emplace_back(p->numel() * sizeof(float));
  }
  for (int step = 1; step <= 3; ++step) {
    const double lr = 1e-2 / step;
    for (size_t i = 0; i < params.all().size(); ++i) {
      auto& p = *params.all()[i];
      p.grad = randn(p.numel(), 140 + step * 10 + uint32_t(i), step == 2 ? 1e-3f : 1.0f);
      g[i].copy_from_host(p.grad.data(), p.grad.size() * sizeof(float));
      tg::adamw_update(w[i].as<float>(), g[i].as<float>(), m[i].as<uint16_t>(), v[i].as<uint16_t>(), p.numel(),
                       tg::adamw_step_constants(config, step, lr), p.shape.size() == 2, nullptr);
    }
    opt.step(lr);
    sync();
    for (size_t i = 0; i < params.all().size(); ++i) {
      SCOPED_TRACE("step " + std::to_string(step) + ", " + params.all()[i]->name);
      const int64_t k = params.all()[i]->numel();
      EXPECT_TRUE(same("adamw weights", to_host<float>(w[i], k), params.all()[i]->value));
      EXPECT_TRUE(same("adamw exp_avg", to_host<uint16_t>(m[i], k), opt.exp_avg(int64_t(i))));
      EXPECT_TRUE(same("adamw exp_avg_sq", to_host<uint16_t>(v[i], k), opt.exp_avg_sq(int64_t(i))));
    }
  }
}

// ------------------------------------------------------------------------------------------
// Element-wise helpers
// ------------------------------------------------------------------------------------------

// add, add_inplace, scale, copy_rows and fill_zero bitwise; the BF16 casts bitwise against
// dispatch::bf16_from_float / bf16_to_float including ties, infinities and NaN; the double sum of squares
// rtol 1e-12 against a loop.
TEST(GpuElementwiseTest, HelpersMatchHostLoops) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t n = 100003;
  auto a = randn(n, 151), b = randn(n, 152), c = randn(n, 154);
  a[0] = std::numeric_limits<float>::infinity();
  a[1] = -std::numeric_limits<float>::infinity();
  b[0] = b[1] = 0;
  c[0] = std::numeric_limits<float>::infinity();
  c[1] = std::numeric_limits<float>::quiet_NaN();
  c[2] = 1.0f + 1.0f / 256;  // exactly halfway between two BF16 values: ties to even
  c[3] = 1.0f + 3.0f / 256;
  c[4] = -3.0e38f;  // rounds up to -inf
  auto da = to_device(a), dbb = to_device(b), dc = to_device(c);
  cuda::DeviceBuffer sum(n * sizeof(float)), bf(n * sizeof(uint16_t)), ss(sizeof(double));
  tg::add(da.as<float>(), dbb.as<float>(), n, sum.as<float>(), nullptr);
  tg::cast_to_bf16(dc.as<float>(), n, bf.as<uint16_t>(), nullptr);
  tg::sum_squares(dbb.as<float>(), n, ss.as<double>(), nullptr);
  sync();
  std::vector<float> sum_ref(n);
  std::vector<uint16_t> bf_ref(n);
  double ss_ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum_ref[i] = a[i] + b[i];
    bf_ref[i] = dispatch::bf16_from_float(c[i]);
    ss_ref += double(b[i]) * double(b[i]);
  }
  EXPECT_TRUE(same("add", to_host<float>(sum, n), sum_ref));
  EXPECT_TRUE(same("cast_to_bf16", to_host<uint16_t>(bf, n), bf_ref));
  cuda::DeviceBuffer back(n * sizeof(float));
  tg::cast_from_bf16(bf.as<uint16_t>(), n, back.as<float>(), nullptr);
  sync();
  std::vector<float> back_ref(n);
  for (int64_t i = 0; i < n; ++i) back_ref[i] = dispatch::bf16_to_float(bf_ref[i]);
  EXPECT_TRUE(same("cast_from_bf16", to_host<float>(back, n), back_ref));
  EXPECT_TRUE(close("sum_squares", to_host<double>(ss, 1), std::vector<double>{ss_ref}, 1e-12, 0));

  tg::add_inplace(dbb.as<float>(), da.as<float>(), n, nullptr);  // b += a
  tg::scale_inplace(da.as<float>(), n, 0.37f, nullptr);         // a *= 0.37
  sync();
  std::vector<float> scaled(n);
  for (int64_t i = 0; i < n; ++i) scaled[i] = a[i] * 0.37f;
  EXPECT_TRUE(same("add_inplace", to_host<float>(dbb, n), sum_ref));
  EXPECT_TRUE(same("scale_inplace", to_host<float>(da, n), scaled));

  // copy_rows: a [5 x 7] block out of stride 11 into stride 9; fill_zero clears.
  const int64_t rows = 5, cols = 7;
  auto src = randn(rows * 11, 153);
  std::vector<float> dst(rows * 9, -1.0f), dst_ref = dst;
  for (int64_t r = 0; r < rows; ++r) std::copy_n(&src[r * 11], cols, &dst_ref[r * 9]);
  auto dsrc = to_device(src), ddst = to_device(dst);
  tg::copy_rows(dsrc.as<float>(), 11, rows, cols, ddst.as<float>(), 9, nullptr);
  sync();
  EXPECT_TRUE(same("copy_rows", to_host<float>(ddst, rows * 9), dst_ref));
  tg::fill_zero(ddst.as<float>(), rows * 9, nullptr);
  sync();
  EXPECT_TRUE(same("fill_zero", to_host<float>(ddst, rows * 9), std::vector<float>(rows * 9, 0.0f)));
}

}  // namespace
}  // namespace switchyard
