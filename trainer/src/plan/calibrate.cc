// Measured SGEMM rates at the model's shapes (method in calibrate.h).
#include "switchyard/trainer/plan/calibrate.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <utility>
#include <vector>

#include "switchyard/common/error.h"

namespace switchyard::trainer::plan {
namespace {

enum class GemmPass { kForward, kInputGrad, kWeightGrad };

// Median seconds of one pass of a Linear with an N x K weight over M rows, FP32 row-major:
// forward Y[M x N] = X[M x K] W^T, input gradient dX[M x K] = dY W, weight gradient
// dW[N x K] = dY^T X.
double time_sgemm(int64_t m, int64_t n, int64_t k, int reps, GemmPass pass = GemmPass::kForward) {
  std::vector<float> x(static_cast<size_t>(m * k), 0.5f), w(static_cast<size_t>(n * k), 0.25f),
      y(static_cast<size_t>(m * n), 0.125f);
  const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
  auto once = [&] {
    switch (pass) {
      case GemmPass::kForward:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x.data(), K, w.data(), K, 0.0f, y.data(),
                    N);
        break;
      case GemmPass::kInputGrad:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, y.data(), N, w.data(), K, 0.0f, x.data(),
                    K);
        break;
      case GemmPass::kWeightGrad:
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, y.data(), N, x.data(), K, 1.0f, w.data(),
                    K);
        break;
    }
  };
  once();  // warm-up (packing buffers, page faults)
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    once();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[reps / 2];
}

}  // namespace

ClusterSpec calibrate_cpu(const ClusterSpec& base, const TrainingSpec& spec, int reps) {
  SY_REQUIRE(reps >= 1, "calibrate: reps " << reps << " must be >= 1");
  SY_REQUIRE(spec.recipe.linear_gemm == "fp32",
             "calibrate: the CPU trainer runs the fp32 recipe, not " << spec.recipe.name);
  openblas_set_num_threads(1);
  ClusterSpec c = base;
  c.gemm_shapes.clear();
  const int64_t tokens = spec.micro_batch * spec.seq_len;
  std::set<std::pair<int64_t, int64_t>> shapes;
  for (const BlockCost& b : model_blocks(spec.model, spec.mtp_depth, spec.seq_len, spec.recipe, spec.recompute))
    for (const OpCost& op : b.ops)
      if (op.kind == OpCost::Kind::kGemm) shapes.insert({op.n, op.k});
  const double K = static_cast<double>(std::max<int64_t>(1, spec.model.num_experts_per_tok));
  const double E = static_cast<double>(std::max<int64_t>(1, spec.model.n_routed_experts));
  for (const auto& [n, k] : shapes) {
    // Routed experts see tokens * K / E rows each; other GEMMs see every token.
    const bool expert = spec.model.n_routed_experts > 0 &&
                        ((n == 2 * spec.model.moe_intermediate_size && k == spec.model.hidden_size) ||
                         (n == spec.model.hidden_size && k == spec.model.moe_intermediate_size));
    const int64_t m = expert ? std::max<int64_t>(1, static_cast<int64_t>(tokens * K / E)) : tokens;
    // One rate for the three passes (the backward is 2x the forward FLOPs).
    const double s = time_sgemm(m, n, k, reps) + time_sgemm(m, n, k, reps, GemmPass::kInputGrad) +
                     time_sgemm(m, n, k, reps, GemmPass::kWeightGrad);
    c.gemm_shapes.push_back({"fp32", n, k, 3 * 2.0 * m * n * k / s / 1e12});
  }
  // Attention: per head Q K^T (T x T x dqk) and P V (T x dv x T); causal blocks skip half.
  const int64_t T = spec.seq_len, dqk = spec.model.qk_head_dim(), dv = spec.model.v_head_dim;
  const double s = time_sgemm(T, T, dqk, reps) + time_sgemm(T, dv, T, reps);
  const double rate = 2.0 * T * T * (dqk + dv) / s / 1e12;
  c.attention_fwd_tflops = c.attention_bwd_tflops = rate;
  c.sources["gemm_shapes"] =
      "measured by calibrate_cpu: cblas_sgemm forward + input-gradient + weight-gradient passes, 1 thread, medians "
      "of " +
      std::to_string(reps);
  c.sources["attention_fwd_tflops"] = c.sources["attention_bwd_tflops"] =
      "measured by calibrate_cpu: cblas_sgemm at T x T x dqk plus T x dv x T";
  return c;
}

}  // namespace switchyard::trainer::plan
