// DeepSeek-V3 `noaux_tc` expert selection: group-limited top-k over biased sigmoid scores.
//
// The bias is used only for selection; the combine weights come from the unbiased scores.
// group score = sum of the top-2 biased scores in the group; the top `top_groups` groups are
// kept and the top `top_k` experts among them selected (ties go to the lower index).
// The selection itself is dispatch::route_group_limited (one router for the whole project);
// this wrapper adapts the model's types. The gradient through the weights is the MoE layer's
// (moe.cc). Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <vector>

namespace switchyard::trainer {

struct RouterConfig {
  int64_t num_experts = 0;
  int64_t top_k = 0;
  int64_t num_groups = 1;
  int64_t top_groups = 1;
  double route_scale = 1.0;  // routed_scaling_factor
  bool normalize = true;     // norm_topk_prob
};

// scores: [n, E] sigmoid affinities; bias: [E] FP32 e_score_correction_bias.
// topk_idx: [n, K] selected experts, by decreasing biased score; topk_weight: [n, K]
// route_scale * s / sum(selected s) (or route_scale * s without normalize).
// min_margin (optional) gets the smallest decision margin over all tokens: between the last
// kept and the first dropped group score, and between the K-th selected and the best
// unselected allowed biased score (a perturbation smaller than it cannot change the routing).
template <class T>
void route_group_limited(const RouterConfig& config, const T* scores, const float* bias, int64_t n,
                         int64_t* topk_idx, T* topk_weight, double* min_margin);

// Plain top-k of one row of scores (no groups, no bias) into idx[k]; returns the margin
// between the k-th and the (k+1)-th score. Used by the sequence-wise balance loss.
template <class T>
double plain_topk(const T* scores, int64_t num_experts, int64_t k, int64_t* idx);

// Aux-loss-free bias update: bias[e] += rate * sign(mean(counts) - counts[e]).
void update_expert_bias(float* bias, const double* counts, int64_t num_experts, double rate);

struct LoadStats {
  double max_load = 0;   // max over experts of the tokens routed to it
  double mean_load = 0;  // mean over experts
  double max_over_mean() const { return mean_load > 0 ? max_load / mean_load : 0; }
};
LoadStats load_stats(const double* counts, int64_t num_experts);

}  // namespace switchyard::trainer
