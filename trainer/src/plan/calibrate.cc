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

// Median seconds of C[M x N] = A[M x K] * B[K x N]^T (the Linear layout), FP32.
double time_sgemm(int64_t m, int64_t n, int64_t k, int reps) {
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(n * k), 0.25f),
      c(static_cast<size_t>(m * n));
  auto once = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, a.data(), static_cast<int>(k), b.data(), static_cast<int>(k), 0.0f,
                c.data(), static_cast<int>(n));
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
  SY_REQUIRE(spec.recipe.linear_gemm == "fp32", "calibrate: the CPU trainer runs the fp32 recipe, not "
                                                    << spec.recipe.name);
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
    const double s = time_sgemm(m, n, k, reps);
    c.gemm_shapes.push_back({"fp32", n, k, 2.0 * m * n * k / s / 1e12});
  }
  // Attention: per head Q K^T (T x T x dqk) and P V (T x dv x T); causal blocks skip half.
  const int64_t T = spec.seq_len, dqk = spec.model.qk_head_dim(), dv = spec.model.v_head_dim;
  const double s = time_sgemm(T, T, dqk, reps) + time_sgemm(T, dv, T, reps);
  const double rate = 2.0 * T * T * (dqk + dv) / s / 1e12;
  c.attention_fwd_tflops = c.attention_bwd_tflops = rate;
  c.sources["gemm_shapes"] = "measured by calibrate_cpu: cblas_sgemm, 1 thread, median of " + std::to_string(reps);
  c.sources["attention_fwd_tflops"] = c.sources["attention_bwd_tflops"] =
      "measured by calibrate_cpu: cblas_sgemm at T x T x dqk plus T x dv x T";
  return c;
}

}  // namespace switchyard::trainer::plan
