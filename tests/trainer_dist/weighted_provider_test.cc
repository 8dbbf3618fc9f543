// The MoE block's fused provider hook (ExpertProvider::forward_weighted/backward_weighted),
// one process, FP64: a provider that applies the gate weights itself (naive loops over its
// per-assignment outputs, <dy, out_k> for the gate-weight gradient) must give the same losses
// and every gradient (router gate included, which now flows from the provider's dL/dw) as
// the block's own per-assignment path with LocalExperts. The hook must actually be taken on
// every MoE layer, forward and backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "model_test_util.h"
#include "switchyard/trainer/experts.h"
#include "switchyard/trainer/model.h"

namespace switchyard::trainer {
namespace {

struct HookCalls {
  int forward = 0, backward = 0;
};

// Experts of one layer computed by LocalExperts, combined with the gate weights here.
class WeightedExperts : public ExpertProvider<double> {
 public:
  WeightedExperts(ParameterSet<double>& params, int64_t layer, const ModelConfig& c, HookCalls* calls)
      : d_(c.hidden_size), calls_(calls) {
    std::vector<SwiGlu<double>> experts;
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const std::string p = "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(e) + ".";
      experts.emplace_back(&params.at(p + "gate_proj.weight"), &params.at(p + "up_proj.weight"),
                           &params.at(p + "down_proj.weight"), c.hidden_size, c.moe_intermediate_size);
    }
    inner_ = std::make_unique<LocalExperts<double>>(std::move(experts), d_);
  }
  void forward(const RoutingPlan&, const double*, double*) override { FAIL() << "per-assignment forward called"; }
  void backward_input(const RoutingPlan&, const double*, double*) override {
    FAIL() << "per-assignment backward called";
  }
  void backward_weight() override { inner_->backward_weight(); }
  void release() override { inner_->release(); }

  bool forward_weighted(const RoutingPlan& plan, const double* x, const double* w, double* y) override {
    ++calls_->forward;
    const int64_t N = plan.num_tokens, K = plan.top_k;
    out_.assign(N * K * d_, 0.0);
    w_.assign(w, w + N * K);
    inner_->forward(plan, x, out_.data());
    for (int64_t t = 0; t < N; ++t)
      for (int64_t j = 0; j < d_; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += w[t * K + k] * out_[(t * K + k) * d_ + j];
        y[t * d_ + j] = s;
      }
    return true;
  }
  bool backward_weighted(const RoutingPlan& plan, const double* dy, double* dx, double* dw) override {
    ++calls_->backward;
    const int64_t N = plan.num_tokens, K = plan.top_k;
    d_out_.assign(N * K * d_, 0.0);
    for (int64_t t = 0; t < N; ++t)
      for (int64_t k = 0; k < K; ++k) {
        double dot = 0;
        for (int64_t j = 0; j < d_; ++j) {
          dot += dy[t * d_ + j] * out_[(t * K + k) * d_ + j];
          d_out_[(t * K + k) * d_ + j] = w_[t * K + k] * dy[t * d_ + j];
        }
        dw[t * K + k] = dot;
      }
    inner_->backward_input(plan, d_out_.data(), dx);
    return true;
  }

 private:
  int64_t d_;
  HookCalls* calls_;
  std::unique_ptr<LocalExperts<double>> inner_;
  std::vector<double> out_, w_, d_out_;
};

TEST(ExpertProviderHookTest, WeightedProviderGivesTheSameLossAndGradients) {
  ModelConfig c = model_config_preset("nano");
  c.aux_loss_alpha = 0.1;  // the balance-loss gradient shares the router backward
  Model<double> local(c), fused(c);
  testing::randomize_for_test(local, 11);
  fused.load_weights(local.weights());
  HookCalls calls;
  const std::vector<int64_t> moe = fused.moe_layer_indices();
  ASSERT_FALSE(moe.empty());
  for (int64_t l : moe) fused.set_expert_provider(l, std::make_unique<WeightedExperts>(fused.parameters(), l, c, &calls));
  const auto tokens = testing::random_tokens(c, 2, 8, 3);
  const Losses a = local.forward(tokens.data(), 2, 8);
  const Losses b = fused.forward(tokens.data(), 2, 8);
  EXPECT_EQ(calls.forward, static_cast<int>(moe.size()));
  EXPECT_NEAR(a.total, b.total, 1e-12 * std::abs(a.total));
  local.backward();
  fused.backward();
  EXPECT_EQ(calls.backward, static_cast<int>(moe.size()));
  int gate_params = 0;
  for (auto& p : local.parameters().all()) {
    const auto& q = fused.parameters().at(p->name).grad;
    double diff = 0, scale = 0;
    for (size_t i = 0; i < q.size(); ++i)
      diff = std::max(diff, std::abs(q[i] - p->grad[i])), scale = std::max(scale, std::abs(p->grad[i]));
    EXPECT_LE(diff, 1e-11 * scale) << p->name;
    if (p->name.find("mlp.gate.weight") != std::string::npos) {
      ++gate_params;
      EXPECT_GT(scale, 0.0) << p->name << ": the router must get a gradient through the provider's dL/dw";
    }
  }
  EXPECT_EQ(gate_params, static_cast<int>(moe.size()));
}

}  // namespace
}  // namespace switchyard::trainer
