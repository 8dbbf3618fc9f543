// Group-limited top-k routing, plain top-k and the bias update (see router.h).
#include "switchyard/trainer/router.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace switchyard::trainer {

template <class T>
void route_group_limited(const RouterConfig& c, const T* scores, const float* bias, int64_t n, int64_t* topk_idx,
                         T* topk_weight, double* min_margin) {
  const int64_t E = c.num_experts, G = c.num_groups, per_group = E / G, K = c.top_k;
  const double kNegInf = -std::numeric_limits<double>::infinity();
  std::vector<double> biased(E), group_score(G);
  std::vector<int64_t> group_order(G), expert_order(E);
  double margin = std::numeric_limits<double>::infinity();
  for (int64_t t = 0; t < n; ++t) {
    const T* s = scores + t * E;
    for (int64_t e = 0; e < E; ++e) biased[e] = double(s[e]) + double(bias[e]);
    if (G > 1) {
      for (int64_t g = 0; g < G; ++g) {
        double a = kNegInf, b = kNegInf;  // the two largest in the group
        for (int64_t e = g * per_group; e < (g + 1) * per_group; ++e) {
          if (biased[e] > a) {
            b = a;
            a = biased[e];
          } else if (biased[e] > b) {
            b = biased[e];
          }
        }
        group_score[g] = a + b;
      }
      std::iota(group_order.begin(), group_order.end(), 0);
      std::stable_sort(group_order.begin(), group_order.end(),
                       [&](int64_t x, int64_t y) { return group_score[x] > group_score[y]; });
      if (c.top_groups < G)
        margin = std::min(margin, group_score[group_order[c.top_groups - 1]] - group_score[group_order[c.top_groups]]);
      for (int64_t r = c.top_groups; r < G; ++r) {
        int64_t g = group_order[r];
        for (int64_t e = g * per_group; e < (g + 1) * per_group; ++e) biased[e] = kNegInf;
      }
    }
    std::iota(expert_order.begin(), expert_order.end(), 0);
    std::stable_sort(expert_order.begin(), expert_order.end(),
                     [&](int64_t x, int64_t y) { return biased[x] > biased[y]; });
    if (K < E && biased[expert_order[K]] != kNegInf)
      margin = std::min(margin, biased[expert_order[K - 1]] - biased[expert_order[K]]);
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += double(s[expert_order[k]]);
    for (int64_t k = 0; k < K; ++k) {
      int64_t e = expert_order[k];
      topk_idx[t * K + k] = e;
      double w = c.normalize ? double(s[e]) / sum : double(s[e]);
      topk_weight[t * K + k] = T(w * c.route_scale);
    }
  }
  if (min_margin) *min_margin = margin;
}

template <class T>
double plain_topk(const T* scores, int64_t E, int64_t k, int64_t* idx) {
  std::vector<int64_t> order(E);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return scores[x] > scores[y]; });
  std::copy(order.begin(), order.begin() + k, idx);
  return k < E ? double(scores[order[k - 1]]) - double(scores[order[k]]) : std::numeric_limits<double>::infinity();
}

void update_expert_bias(float* bias, const double* counts, int64_t E, double rate) {
  double mean = 0;
  for (int64_t e = 0; e < E; ++e) mean += counts[e];
  mean /= E;
  for (int64_t e = 0; e < E; ++e) {
    double diff = mean - counts[e];
    double sign = diff > 0 ? 1.0 : (diff < 0 ? -1.0 : 0.0);
    bias[e] = float(double(bias[e]) + rate * sign);
  }
}

LoadStats load_stats(const double* counts, int64_t E) {
  LoadStats s;
  for (int64_t e = 0; e < E; ++e) {
    s.max_load = std::max(s.max_load, counts[e]);
    s.mean_load += counts[e];
  }
  s.mean_load /= E;
  return s;
}

template void route_group_limited<float>(const RouterConfig&, const float*, const float*, int64_t, int64_t*, float*,
                                         double*);
template void route_group_limited<double>(const RouterConfig&, const double*, const float*, int64_t, int64_t*,
                                          double*, double*);
template double plain_topk<float>(const float*, int64_t, int64_t, int64_t*);
template double plain_topk<double>(const double*, int64_t, int64_t, int64_t*);

}  // namespace switchyard::trainer
