// Gradients of the whole model (total loss incl. MTP and balance loss) against central
// finite differences in FP64 on nano: per parameter tensor, 3 random directional
// derivatives and 16 sampled entries. The batch is chosen with routing margins far from
// ties (min margin > 1e-4 while the perturbation moves scores by ~1e-6).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "model_test_util.h"
#include "switchyard/trainer/model.h"

namespace switchyard::trainer {
namespace {

constexpr int64_t kBatch = 2, kSeq = 8;
constexpr double kEps = 1e-6;
// Central differences in FP64: truncation ~eps^2 |f'''| ~ 1e-12, round-off ~1e-15 |L| / eps ~ 1e-8.
constexpr double kAbsTol = 3e-8, kRelTol = 1e-5;

ModelConfig nano_for_gradcheck() {
  ModelConfig c = model_config_preset("nano");
  c.aux_loss_alpha = 0.1;  // large enough that the balance-loss gradient is visible in the check
  return c;
}

// Picks the first seed whose batch and weights route with margins above 1e-4.
struct UntiedSetup {
  uint64_t seed = 0;
  std::vector<int64_t> tokens;
};

UntiedSetup find_untied_setup(Model<double>& model) {
  for (uint64_t seed = 1; seed < 200; ++seed) {
    testing::randomize_for_test(model, seed);
    auto tokens = testing::random_tokens(model.config(), kBatch, kSeq, seed + 1000);
    model.forward(tokens.data(), kBatch, kSeq);
    if (model.min_routing_margin() > 1e-4) return {seed, tokens};
  }
  ADD_FAILURE() << "no seed in [1, 200) gives routing margins above 1e-4";
  return {};
}

TEST(ModelGradientTest, MatchesCentralFiniteDifferencesOnNano) {
  Model<double> model(nano_for_gradcheck());
  UntiedSetup setup = find_untied_setup(model);
  ASSERT_FALSE(setup.tokens.empty());
  model.zero_grad();
  model.forward(setup.tokens.data(), kBatch, kSeq);
  model.backward();
  auto loss_at = [&]() { return model.forward(setup.tokens.data(), kBatch, kSeq).total; };

  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  int64_t checked = 0;
  for (auto& p : model.parameters().all()) {
    const int64_t n = p->numel();
    // 3 random unit directions.
    for (int r = 0; r < 3; ++r) {
      std::vector<double> dir(n);
      double norm = 0;
      for (auto& v : dir) {
        v = normal(rng);
        norm += v * v;
      }
      norm = std::sqrt(norm);
      double analytic = 0;
      for (int64_t i = 0; i < n; ++i) analytic += (dir[i] /= norm) * p->grad[i];
      std::vector<double> saved = p->value;
      for (int64_t i = 0; i < n; ++i) p->value[i] = saved[i] + kEps * dir[i];
      double up = loss_at();
      for (int64_t i = 0; i < n; ++i) p->value[i] = saved[i] - kEps * dir[i];
      double down = loss_at();
      p->value = saved;
      double fd = (up - down) / (2 * kEps);
      EXPECT_NEAR(fd, analytic, kAbsTol + kRelTol * std::abs(fd)) << p->name << " direction " << r;
      ++checked;
    }
    // 16 sampled entries (all if fewer).
    std::uniform_int_distribution<int64_t> pick(0, n - 1);
    for (int s = 0; s < std::min<int64_t>(16, n); ++s) {
      int64_t i = n <= 16 ? s : pick(rng);
      double saved = p->value[i];
      p->value[i] = saved + kEps;
      double up = loss_at();
      p->value[i] = saved - kEps;
      double down = loss_at();
      p->value[i] = saved;
      double fd = (up - down) / (2 * kEps);
      EXPECT_NEAR(fd, p->grad[i], kAbsTol + kRelTol * std::abs(fd)) << p->name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 19 * 100);
}

// The split backward gives the same gradients whether W runs right after each B or after
// all of them, and with the RMSNorm / up-projection recomputation on.
TEST(ModelGradientTest, SplitOrderAndRecomputeGiveIdenticalGradients) {
  ModelConfig c = nano_for_gradcheck();
  Model<double> base(c);
  testing::randomize_for_test(base, 3);
  auto tokens = testing::random_tokens(c, kBatch, kSeq, 11);
  base.forward(tokens.data(), kBatch, kSeq);
  base.backward(BackwardOrder::kInterleaved);
  TensorMap weights = base.weights();

  struct Variant {
    ModelOptions options;
    BackwardOrder order;
  };
  for (Variant v : {Variant{{false, false}, BackwardOrder::kInputFirst}, Variant{{true, false}, BackwardOrder::kInterleaved},
                    Variant{{false, true}, BackwardOrder::kInputFirst}, Variant{{true, true}, BackwardOrder::kInputFirst}}) {
    Model<double> m(c, v.options);
    m.load_weights(weights);
    Losses l = m.forward(tokens.data(), kBatch, kSeq);
    EXPECT_EQ(l.total, base.losses().total);
    m.backward(v.order);
    for (auto& p : m.parameters().all()) {
      const auto& ref = base.parameters().at(p->name).grad;
      double max_diff = 0;
      for (size_t i = 0; i < ref.size(); ++i) max_diff = std::max(max_diff, std::abs(ref[i] - p->grad[i]));
      EXPECT_LE(max_diff, 1e-13) << p->name << " recompute_norms=" << v.options.recompute_norms
                                 << " recompute_up_proj=" << v.options.recompute_up_proj;
    }
  }
}

}  // namespace
}  // namespace switchyard::trainer
