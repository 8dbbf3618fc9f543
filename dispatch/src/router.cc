// DeepSeek-V3 group-limited top-k routing (see router.h for the exact rule and tie order).
#include "switchyard/dispatch/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "switchyard/common/error.h"

namespace switchyard::dispatch {

void validate_router_config(const RouterConfig& c) {
  if (c.num_experts <= 0) SY_THROW(InvalidArgument, "router: num_experts = " << c.num_experts << " must be > 0");
  if (c.num_groups <= 0 || c.num_experts % c.num_groups != 0)
    SY_THROW(InvalidArgument, "router: num_groups = " << c.num_groups << " must be > 0 and divide num_experts = "
                                                      << c.num_experts);
  if (c.top_groups < 1 || c.top_groups > c.num_groups)
    SY_THROW(InvalidArgument, "router: top_groups = " << c.top_groups << " must be in [1, num_groups = "
                                                      << c.num_groups << "]");
  const int allowed = c.top_groups * (c.num_experts / c.num_groups);
  if (c.top_k < 1 || c.top_k > allowed)
    SY_THROW(InvalidArgument, "router: top_k = " << c.top_k << " must be in [1, " << allowed
                                                 << "] (experts in the top_groups = " << c.top_groups << " groups)");
  if (!std::isfinite(c.route_scale))
    SY_THROW(InvalidArgument, "router: route_scale = " << c.route_scale << " is not finite");
}

namespace {

// Index order "a before b": larger value first, lower index on ties.
template <class T>
struct BestFirst {
  const T* v;
  bool operator()(int a, int b) const { return v[a] > v[b] || (v[a] == v[b] && a < b); }
};

template <class T>
void route(const RouterConfig& c, const T* scores, const T* bias, int64_t num_tokens, int64_t* topk_idx,
           T* topk_weights, double* min_margin) {
  validate_router_config(c);
  if (num_tokens < 0) SY_THROW(InvalidArgument, "router: num_tokens = " << num_tokens << " is negative");
  if (num_tokens > 0 && (scores == nullptr || topk_idx == nullptr || topk_weights == nullptr))
    SY_THROW(InvalidArgument, "router: scores, topk_idx and topk_weights must not be null");
  const int E = c.num_experts, K = c.top_k, G = c.num_groups, per_group = E / G;
  std::vector<T> biased(E), group_score(G);
  std::vector<int> groups(G), candidates;
  candidates.reserve(E);
  double margin = std::numeric_limits<double>::infinity();
  // Gap between the last chosen value and the best value left out (order[begin, n) chosen).
  auto gap = [](const std::vector<int>& order, int n, const T* v) {
    double best_left = -std::numeric_limits<double>::infinity();
    for (size_t i = n; i < order.size(); ++i) best_left = std::max(best_left, double(v[order[i]]));
    return double(v[order[n - 1]]) - best_left;
  };
  for (int64_t t = 0; t < num_tokens; ++t) {
    const T* s = scores + t * E;
    for (int e = 0; e < E; ++e) {
      if (!std::isfinite(s[e]) || (bias && !std::isfinite(bias[e])))
        SY_THROW(InvalidArgument, "router: token " << t << " expert " << e << ": score " << s[e]
                                                   << (bias ? " or bias is" : " is") << " not finite");
      biased[e] = s[e] + (bias ? bias[e] : T(0));
    }
    // Group score: the sum of the two largest biased scores of the group.
    for (int g = 0; g < G; ++g) {
      const T* b = biased.data() + g * per_group;
      T first = b[0], second = T(0);
      bool have_second = false;
      for (int i = 1; i < per_group; ++i) {
        if (b[i] > first) {
          second = first;
          first = b[i];
        } else if (!have_second || b[i] > second) {
          second = b[i];
        }
        have_second = true;
      }
      group_score[g] = have_second ? first + second : first;
      groups[g] = g;
    }
    std::partial_sort(groups.begin(), groups.begin() + c.top_groups, groups.end(), BestFirst<T>{group_score.data()});
    if (c.top_groups < G) margin = std::min(margin, gap(groups, c.top_groups, group_score.data()));
    candidates.clear();
    for (int i = 0; i < c.top_groups; ++i)
      for (int j = 0; j < per_group; ++j) candidates.push_back(groups[i] * per_group + j);
    std::partial_sort(candidates.begin(), candidates.begin() + K, candidates.end(), BestFirst<T>{biased.data()});
    if (K < static_cast<int>(candidates.size())) margin = std::min(margin, gap(candidates, K, biased.data()));
    T sum = 0;
    for (int k = 0; k < K; ++k) sum += s[candidates[k]];
    for (int k = 0; k < K; ++k) {
      const int e = candidates[k];
      T w = s[e];
      if (c.normalize) w = sum != T(0) ? w / sum : T(0);
      topk_idx[t * K + k] = e;
      topk_weights[t * K + k] = static_cast<T>(w * static_cast<T>(c.route_scale));
    }
  }
  if (min_margin) *min_margin = margin;
}

}  // namespace

void route_group_limited(const RouterConfig& c, const float* scores, const float* bias, int64_t num_tokens,
                         int64_t* topk_idx, float* topk_weights, double* min_margin) {
  route<float>(c, scores, bias, num_tokens, topk_idx, topk_weights, min_margin);
}

void route_group_limited(const RouterConfig& c, const double* scores, const double* bias, int64_t num_tokens,
                         int64_t* topk_idx, double* topk_weights, double* min_margin) {
  route<double>(c, scores, bias, num_tokens, topk_idx, topk_weights, min_margin);
}

}  // namespace switchyard::dispatch
