// DeepSeek-V3 group-limited (node-limited) top-k routing as a plain function.
//
// Given sigmoid affinities s[T x E] and an optional per-expert selection bias b[E]:
//   1. sb = s + b (b only steers the selection, never the weights).
//   2. Experts are split into num_groups contiguous groups of E / num_groups; a group's score
//      is the sum of its two largest sb values (its only value when a group has one expert).
//   3. The top_groups groups with the largest scores are kept; the others are masked out.
//   4. topk_idx = the top_k experts by sb among the kept groups, best first.
//   5. topk_weights[k] = s[idx_k] (unbiased), divided by sum_j s[idx_j] when normalize, then
//      multiplied by route_scale (no epsilon in the sum; a zero sum gives zero weights).
// Ties (equal group scores or equal expert scores) go to the LOWER index, so the result is a
// pure function of the inputs. When a group is a node (num_groups = number of nodes, experts
// placed contiguously), step 3 is DeepSeek-V3's node-limited routing: at most top_groups
// nodes per token.
//
// Threading: pure functions, no state; safe from any thread. Throws InvalidArgument on a bad
// configuration or a non-finite score; outputs are written only for valid inputs.
#pragma once

#include <cstdint>

namespace switchyard::dispatch {

struct RouterConfig {
  int num_experts = 0;     // E
  int top_k = 0;           // K experts per token
  int num_groups = 1;      // G, must divide E
  int top_groups = 1;      // groups kept per token, 1..G; top_k <= top_groups * (E / G)
  double route_scale = 1.0;  // multiplies the weights (V3: 2.5)
  bool normalize = true;   // divide the top-k weights by their sum (V3: true)
};

// Throws InvalidArgument naming the field when the configuration cannot route.
void validate_router_config(const RouterConfig& config);

// scores:       [T x E] float, sigmoid affinities, row-major.
// bias:         [E] float or nullptr (no bias); used for selection only.
// topk_idx:     [T x K] int64 out, expert ids, best (largest biased score) first.
// topk_weights: [T x K] float out, gate weights from the unbiased scores.
// min_margin:   optional out, the smallest decision margin over all tokens: between the last
//               kept and the best dropped group score, and between the K-th selected and the
//               best unselected candidate biased score (+inf when nothing was decided). A
//               perturbation of the scores smaller than half of it cannot change the routing,
//               which is what finite-difference gradient checks need to know.
void route_group_limited(const RouterConfig& config, const float* scores, const float* bias, int64_t num_tokens,
                         int64_t* topk_idx, float* topk_weights, double* min_margin = nullptr);
// The same in double precision (gradient checks).
void route_group_limited(const RouterConfig& config, const double* scores, const double* bias, int64_t num_tokens,
                         int64_t* topk_idx, double* topk_weights, double* min_margin = nullptr);

}  // namespace switchyard::dispatch
