// RouterTest: group-limited top-k against a brute-force reference that enumerates every
// allowed group set and picks experts by repeated arg-max scans.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/router.h"

namespace switchyard::dispatch {
namespace {

// Reference for one token. Group score by sorting the group's values descending; groups by
// repeated arg-max with strict > (first = lowest index wins ties); experts the same way.
template <class T>
void reference_route(const RouterConfig& c, const T* s, const T* bias, int64_t* idx, T* w) {
  const int E = c.num_experts, G = c.num_groups, per = E / G;
  std::vector<T> sb(E);
  for (int e = 0; e < E; ++e) sb[e] = s[e] + (bias ? bias[e] : T(0));
  std::vector<T> gscore(G);
  for (int g = 0; g < G; ++g) {
    std::vector<T> v(sb.begin() + g * per, sb.begin() + (g + 1) * per);
    std::sort(v.begin(), v.end(), [](T a, T b) { return a > b; });
    gscore[g] = per >= 2 ? v[0] + v[1] : v[0];
  }
  std::vector<bool> group_taken(G, false), expert_taken(E, false);
  for (int i = 0; i < c.top_groups; ++i) {
    int best = -1;
    for (int g = 0; g < G; ++g)
      if (!group_taken[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
    group_taken[best] = true;
  }
  T sum = 0;
  for (int k = 0; k < c.top_k; ++k) {
    int best = -1;
    for (int e = 0; e < E; ++e)
      if (group_taken[e / per] && !expert_taken[e] && (best < 0 || sb[e] > sb[best])) best = e;
    expert_taken[best] = true;
    idx[k] = best;
    sum += s[best];
  }
  for (int k = 0; k < c.top_k; ++k) {
    T v = s[idx[k]];
    if (c.normalize) v = v / sum;
    w[k] = static_cast<T>(v * static_cast<T>(c.route_scale));
  }
}

template <class T>
void check_against_reference(const RouterConfig& c, int64_t T_tokens, bool with_bias, bool coarse, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<T> scores(T_tokens * c.num_experts), bias(c.num_experts);
  for (auto& v : scores) v = coarse ? T(std::floor(u(rng) * 4) / 4) : T(1 / (1 + std::exp(-4 * (u(rng) - 0.5))));
  for (auto& v : bias) v = coarse ? T(0) : T(0.1 * (u(rng) - 0.5));
  std::vector<int64_t> idx(T_tokens * c.top_k), ref_idx(c.top_k);
  std::vector<T> w(T_tokens * c.top_k), ref_w(c.top_k);
  route_group_limited(c, scores.data(), with_bias ? bias.data() : nullptr, T_tokens, idx.data(), w.data());
  for (int64_t t = 0; t < T_tokens; ++t) {
    reference_route(c, scores.data() + t * c.num_experts, with_bias ? bias.data() : nullptr, ref_idx.data(),
                    ref_w.data());
    for (int k = 0; k < c.top_k; ++k) {
      ASSERT_EQ(idx[t * c.top_k + k], ref_idx[k]) << "token " << t << " k " << k;
      // Same operations in a possibly different summation order: allow a few ulps.
      ASSERT_NEAR(w[t * c.top_k + k], ref_w[k], 8 * std::numeric_limits<T>::epsilon() * std::abs(ref_w[k]))
          << "token " << t << " k " << k;
    }
  }
}

TEST(RouterTest, MatchesBruteForceV3Shape) {
  RouterConfig c{256, 8, 8, 4, 2.5, true};
  check_against_reference<float>(c, 200, true, false, 1);
  check_against_reference<double>(c, 200, true, false, 2);
}

TEST(RouterTest, MatchesBruteForceSmallShapes) {
  uint32_t seed = 10;
  for (int E : {4, 8, 12, 16}) {
    for (int G : {1, 2, 4}) {
      if (E % G) continue;
      for (int tg = 1; tg <= G; ++tg) {
        for (int k = 1; k <= tg * (E / G) && k <= 6; ++k) {
          for (bool norm : {true, false}) {
            RouterConfig c{E, k, G, tg, norm ? 1.0 : 16.0, norm};
            check_against_reference<float>(c, 30, true, false, ++seed);
            check_against_reference<double>(c, 30, false, false, ++seed);
          }
        }
      }
    }
  }
}

TEST(RouterTest, TiesGoToLowerIndex) {
  // Coarse scores (4 distinct values) make ties in both group scores and expert scores.
  RouterConfig c{16, 4, 4, 2, 1.0, true};
  check_against_reference<float>(c, 300, false, true, 7);
  // All equal: groups 0..top_groups-1 and their first experts win.
  std::vector<float> s(16, 0.5f);
  std::vector<int64_t> idx(4);
  std::vector<float> w(4);
  route_group_limited(c, s.data(), nullptr, 1, idx.data(), w.data());
  EXPECT_EQ(idx, (std::vector<int64_t>{0, 1, 2, 3}));
  for (float v : w) EXPECT_FLOAT_EQ(v, 0.25f);
}

TEST(RouterTest, BiasSteersSelectionNotWeights) {
  RouterConfig c{8, 2, 1, 1, 3.0, false};
  std::vector<double> s = {0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2};
  std::vector<double> bias = {0, 0, 0, 0, 0, 0, 1.0, 2.0};
  std::vector<int64_t> idx(2);
  std::vector<double> w(2);
  route_group_limited(c, s.data(), bias.data(), 1, idx.data(), w.data());
  EXPECT_EQ(idx, (std::vector<int64_t>{7, 6}));
  EXPECT_DOUBLE_EQ(w[0], 0.2 * 3.0);
  EXPECT_DOUBLE_EQ(w[1], 0.3 * 3.0);
}

TEST(RouterTest, GroupLimitKeepsTokensInTopGroups) {
  // Groups as nodes: every token's experts must span at most top_groups groups.
  RouterConfig c{64, 8, 8, 3, 2.5, true};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  const int64_t T = 100;
  std::vector<float> s(T * 64);
  for (auto& v : s) v = u(rng);
  std::vector<int64_t> idx(T * 8);
  std::vector<float> w(T * 8);
  route_group_limited(c, s.data(), nullptr, T, idx.data(), w.data());
  for (int64_t t = 0; t < T; ++t) {
    std::set<int64_t> groups, experts;
    float sum = 0;
    for (int k = 0; k < 8; ++k) {
      groups.insert(idx[t * 8 + k] / 8);
      experts.insert(idx[t * 8 + k]);
      sum += w[t * 8 + k];
    }
    EXPECT_LE(groups.size(), 3u);
    EXPECT_EQ(experts.size(), 8u);
    EXPECT_NEAR(sum, 2.5f, 1e-5f);
  }
}

TEST(RouterTest, RejectsBadConfigurations) {
  std::vector<float> s(16, 0.5f);
  std::vector<int64_t> idx(16);
  std::vector<float> w(16);
  auto run = [&](RouterConfig c) { route_group_limited(c, s.data(), nullptr, 1, idx.data(), w.data()); };
  EXPECT_THROW(run({16, 5, 4, 1, 1.0, true}), InvalidArgument);   // top_k > experts in allowed groups
  EXPECT_THROW(run({16, 2, 3, 1, 1.0, true}), InvalidArgument);   // groups do not divide experts
  EXPECT_THROW(run({16, 2, 4, 5, 1.0, true}), InvalidArgument);   // top_groups > groups
  EXPECT_THROW(run({16, 2, 4, 0, 1.0, true}), InvalidArgument);   // top_groups < 1
  EXPECT_THROW(run({16, 0, 4, 2, 1.0, true}), InvalidArgument);   // top_k < 1
  EXPECT_THROW(run({0, 1, 1, 1, 1.0, true}), InvalidArgument);    // no experts
  s[3] = std::nanf("");
  EXPECT_THROW(run({16, 2, 4, 2, 1.0, true}), InvalidArgument);   // non-finite score
  try {
    run({16, 5, 4, 1, 1.0, true});
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("top_k"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace switchyard::dispatch
