// Routing: group-limited top-k against a naive re-implementation, bias-only selection,
// and the aux-loss-free bias update against a direct computation on model counts.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "model_test_util.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/router.h"

namespace switchyard::trainer {
namespace {

// Naive selection: argmax loops over groups and experts (no sorting).
void naive_route(const RouterConfig& c, const std::vector<double>& s, const std::vector<float>& bias,
                 std::set<int64_t>& chosen) {
  const int64_t per = c.num_experts / c.num_groups;
  std::vector<double> gscore(c.num_groups);
  for (int64_t g = 0; g < c.num_groups; ++g) {
    std::vector<double> v;
    for (int64_t e = g * per; e < (g + 1) * per; ++e) v.push_back(s[e] + bias[e]);
    std::sort(v.rbegin(), v.rend());
    gscore[g] = v[0] + v[1];
  }
  std::set<int64_t> groups;
  for (int64_t r = 0; r < c.top_groups; ++r) {
    int64_t best = -1;
    for (int64_t g = 0; g < c.num_groups; ++g)
      if (!groups.count(g) && (best < 0 || gscore[g] > gscore[best])) best = g;
    groups.insert(best);
  }
  chosen.clear();
  for (int64_t k = 0; k < c.top_k; ++k) {
    int64_t best = -1;
    for (int64_t e = 0; e < c.num_experts; ++e)
      if (groups.count(e / per) && !chosen.count(e) && (best < 0 || s[e] + bias[e] > s[best] + bias[best])) best = e;
    chosen.insert(best);
  }
}

TEST(RouterTest, GroupLimitedTopKMatchesNaiveSelectionAndWeights) {
  RouterConfig c{16, 4, 4, 2, 2.5, true};
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<double> nb(0, 0.1);
  const int64_t n = 200;
  std::vector<double> s(n * c.num_experts);
  for (auto& x : s) x = u(rng);
  std::vector<float> bias(c.num_experts);
  for (auto& b : bias) b = float(nb(rng));
  std::vector<int64_t> idx(n * c.top_k);
  std::vector<double> w(n * c.top_k);
  double margin = 0;
  route_group_limited(c, s.data(), bias.data(), n, idx.data(), w.data(), &margin);
  EXPECT_GT(margin, 0);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<double> row(s.begin() + t * c.num_experts, s.begin() + (t + 1) * c.num_experts);
    std::set<int64_t> expect;
    naive_route(c, row, bias, expect);
    std::set<int64_t> got(idx.begin() + t * c.top_k, idx.begin() + (t + 1) * c.top_k);
    EXPECT_EQ(got, expect) << "token " << t;
    double sum = 0;
    for (int64_t e : expect) sum += row[e];
    for (int64_t k = 0; k < c.top_k; ++k)
      EXPECT_NEAR(w[t * c.top_k + k], 2.5 * row[idx[t * c.top_k + k]] / sum, 1e-15);
  }
}

TEST(RouterTest, BiasSteersSelectionButWeightsUseUnbiasedScores) {
  RouterConfig c{8, 2, 4, 2, 2.5, true};
  std::vector<double> s = {0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.05};
  std::vector<float> bias(8, 0.0f);
  bias[7] = 10.0f;  // expert 7 (group 3) wins its group and is selected despite s = 0.05
  std::vector<int64_t> idx(2);
  std::vector<double> w(2);
  route_group_limited(c, s.data(), bias.data(), 1, idx.data(), w.data(), nullptr);
  EXPECT_EQ(idx[0], 7);
  EXPECT_EQ(idx[1], 0);
  EXPECT_NEAR(w[0], 2.5 * 0.05 / 0.95, 1e-15);
  EXPECT_NEAR(w[1], 2.5 * 0.9 / 0.95, 1e-15);
}

TEST(RouterTest, BiasUpdateMatchesDirectComputationOnModelCounts) {
  ModelConfig c = model_config_preset("nano");
  Model<float> model(c);
  testing::randomize_for_test(model, 4);
  const int64_t B = 3, T = 16;
  auto tokens = testing::random_tokens(c, B, T, 9);
  model.forward(tokens.data(), B, T);
  const double gamma = 1e-3;
  for (int64_t l : model.moe_layer_indices()) {
    const auto& counts = model.expert_counts(l);
    double total = 0, mx = 0;
    for (double x : counts) total += x, mx = std::max(mx, x);
    EXPECT_EQ(total, double(B * T * c.num_experts_per_tok)) << "layer " << l;
    LoadStats st = model.expert_load(l);
    EXPECT_DOUBLE_EQ(st.mean_load, total / c.n_routed_experts);
    EXPECT_DOUBLE_EQ(st.max_load, mx);
  }
  std::vector<std::vector<float>> expect;
  for (int64_t l : model.moe_layer_indices()) {
    const auto& counts = model.expert_counts(l);
    double mean = double(B * T * c.num_experts_per_tok) / c.n_routed_experts;
    std::vector<float> b = model.expert_bias(l);
    for (size_t e = 0; e < b.size(); ++e) {
      if (counts[e] < mean) b[e] = float(double(b[e]) + gamma);
      if (counts[e] > mean) b[e] = float(double(b[e]) - gamma);
    }
    expect.push_back(b);
  }
  model.update_expert_biases(gamma);
  int i = 0;
  for (int64_t l : model.moe_layer_indices()) EXPECT_EQ(model.expert_bias(l), expect[i++]) << "layer " << l;
}

}  // namespace
}  // namespace switchyard::trainer
