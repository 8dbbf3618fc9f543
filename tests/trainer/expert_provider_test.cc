// The ExpertProvider seam of the MoE layer: a provider written with naive per-token loops
// (an independent SwiGLU, forward and backward) replaces LocalExperts on every MoE layer;
// losses and all gradients must equal those of the grouped-GEMM LocalExperts.
#include <gtest/gtest.h>

#include <cmath>

#include "model_test_util.h"
#include "switchyard/trainer/experts.h"
#include "switchyard/trainer/model.h"

namespace switchyard::trainer {
namespace {

class NaiveExperts : public ExpertProvider<double> {
 public:
  NaiveExperts(ParameterSet<double>& params, int64_t layer, int64_t num_experts, int64_t d, int64_t f) : d_(d), f_(f) {
    for (int64_t e = 0; e < num_experts; ++e) {
      std::string p = "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(e) + ".";
      w1_.push_back(&params.at(p + "gate_proj.weight"));
      w3_.push_back(&params.at(p + "up_proj.weight"));
      w2_.push_back(&params.at(p + "down_proj.weight"));
    }
  }
  void forward(const RoutingPlan& plan, const double* x, double* out) override {
    plan_ = plan;
    x_ = x;
    for (int64_t a = 0; a < plan.num_tokens * plan.top_k; ++a) {
      int64_t e = plan.topk_idx[a];
      const double* xt = x + (a / plan.top_k) * d_;
      for (int64_t i = 0; i < d_; ++i) {
        double y = 0;
        for (int64_t j = 0; j < f_; ++j) y += w2_[e]->value[i * f_ + j] * hidden(e, xt, j);
        out[a * d_ + i] = y;
      }
    }
  }
  void backward_input(const RoutingPlan& plan, const double* d_out, double* dx) override {
    d_out_.assign(d_out, d_out + plan.num_tokens * plan.top_k * d_);
    for (int64_t a = 0; a < plan.num_tokens * plan.top_k; ++a) {
      int64_t e = plan.topk_idx[a];
      const double* xt = x_ + (a / plan.top_k) * d_;
      for (int64_t j = 0; j < f_; ++j) {
        double dh = 0;
        for (int64_t i = 0; i < d_; ++i) dh += d_out[a * d_ + i] * w2_[e]->value[i * f_ + j];
        double g = pre(w1_[e], xt, j), u = pre(w3_[e], xt, j), s = 1 / (1 + std::exp(-g));
        double dg = dh * u * (s + g * s * (1 - s)), du = dh * g * s;
        for (int64_t i = 0; i < d_; ++i)
          dx[(a / plan.top_k) * d_ + i] += dg * w1_[e]->value[j * d_ + i] + du * w3_[e]->value[j * d_ + i];
      }
    }
  }
  void backward_weight() override {
    for (int64_t a = 0; a < plan_.num_tokens * plan_.top_k; ++a) {
      int64_t e = plan_.topk_idx[a];
      const double* xt = x_ + (a / plan_.top_k) * d_;
      for (int64_t j = 0; j < f_; ++j) {
        double dh = 0;
        for (int64_t i = 0; i < d_; ++i) {
          dh += d_out_[a * d_ + i] * w2_[e]->value[i * f_ + j];
          w2_[e]->grad[i * f_ + j] += d_out_[a * d_ + i] * hidden(e, xt, j);
        }
        double g = pre(w1_[e], xt, j), u = pre(w3_[e], xt, j), s = 1 / (1 + std::exp(-g));
        double dg = dh * u * (s + g * s * (1 - s)), du = dh * g * s;
        for (int64_t i = 0; i < d_; ++i) {
          w1_[e]->grad[j * d_ + i] += dg * xt[i];
          w3_[e]->grad[j * d_ + i] += du * xt[i];
        }
      }
    }
  }
  void release() override {}

 private:
  double pre(const Parameter<double>* w, const double* x, int64_t j) const {
    double s = 0;
    for (int64_t i = 0; i < d_; ++i) s += w->value[j * d_ + i] * x[i];
    return s;
  }
  double hidden(int64_t e, const double* x, int64_t j) const {
    double g = pre(w1_[e], x, j);
    return g / (1 + std::exp(-g)) * pre(w3_[e], x, j);
  }
  int64_t d_, f_;
  std::vector<Parameter<double>*> w1_, w3_, w2_;
  RoutingPlan plan_;
  const double* x_ = nullptr;
  std::vector<double> d_out_;
};

TEST(ExpertProviderTest, NaiveProviderGivesTheSameLossAndGradients) {
  ModelConfig c = model_config_preset("nano");
  c.aux_loss_alpha = 0.1;
  Model<double> local(c), naive(c);
  testing::randomize_for_test(local, 8);
  naive.load_weights(local.weights());
  for (int64_t l : naive.moe_layer_indices())
    naive.set_expert_provider(l, std::make_unique<NaiveExperts>(naive.parameters(), l, c.n_routed_experts,
                                                                c.hidden_size, c.moe_intermediate_size));
  auto tokens = testing::random_tokens(c, 2, 8, 5);
  Losses a = local.forward(tokens.data(), 2, 8);
  Losses b = naive.forward(tokens.data(), 2, 8);
  EXPECT_NEAR(a.total, b.total, 1e-12 * std::abs(a.total));
  local.backward();
  naive.backward();
  for (auto& p : local.parameters().all()) {
    const auto& q = naive.parameters().at(p->name).grad;
    double diff = 0, scale = 0;
    for (size_t i = 0; i < q.size(); ++i) diff = std::max(diff, std::abs(q[i] - p->grad[i])), scale = std::max(scale, std::abs(p->grad[i]));
    EXPECT_LE(diff, 1e-11 * scale + 1e-300) << p->name;
  }
}

}  // namespace
}  // namespace switchyard::trainer
