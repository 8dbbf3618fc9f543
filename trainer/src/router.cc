// Group-limited top-k routing, plain top-k and the bias update (see router.h).
#include "switchyard/trainer/router.h"

#include "switchyard/dispatch/router.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace switchyard::trainer {

template <class T>
void route_group_limited(const RouterConfig& c, const T* scores, const float* bias, int64_t n, int64_t* topk_idx,
                         T* topk_weight, double* min_margin) {
  // The selection is the dispatch library's router; the model keeps an FP32 bias whatever
  // its compute type, so the bias is widened to T here.
  dispatch::RouterConfig rc;
  rc.num_experts = static_cast<int>(c.num_experts);
  rc.top_k = static_cast<int>(c.top_k);
  rc.num_groups = static_cast<int>(c.num_groups);
  rc.top_groups = static_cast<int>(c.top_groups);
  rc.route_scale = c.route_scale;
  rc.normalize = c.normalize;
  std::vector<T> bias_t(bias, bias + c.num_experts);
  dispatch::route_group_limited(rc, scores, bias_t.data(), n, topk_idx, topk_weight, min_margin);
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
