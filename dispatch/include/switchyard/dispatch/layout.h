// Dispatch layout: who receives what, from the top-k expert indices alone.
//
// Semantics of DeepEP's get_dispatch_layout. Experts are placed evenly and contiguously:
// expert e lives on rank e / (E / R); a rank's node comes from the RankMap. A token counts
// once per rank (and once per node) however many of its experts live there; -1 entries are
// masked and skipped.
//
// Threading: pure functions. Errors: InvalidArgument naming the token, slot and value.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/topology/rank_map.h"

namespace switchyard::dispatch {

struct DispatchLayout {
  int64_t num_tokens = 0;
  int top_k = 0;
  std::vector<int64_t> num_tokens_per_rank;    // [R]
  std::vector<int64_t> num_tokens_per_node;    // [N] ("per RDMA rank" in DeepEP)
  std::vector<int64_t> num_tokens_per_expert;  // [E] (token, expert) pairs per expert
  std::vector<uint8_t> is_token_in_rank;       // [T x R] 0/1
  bool in_rank(int64_t t, int r) const { return is_token_in_rank[t * num_tokens_per_rank.size() + r] != 0; }
};

// Checks topk_idx [T x K] int64: every entry is -1 or in [0, num_experts), and no expert
// appears twice in a row. Throws InvalidArgument on the first bad entry.
void validate_topk_idx(const int64_t* topk_idx, int64_t num_tokens, int top_k, int num_experts);

// topk_idx [T x K] int64 -> the layout over the ranks of rank_map (R = rank_map.size()).
// num_experts must be divisible by R. Validates topk_idx first.
DispatchLayout get_dispatch_layout(const int64_t* topk_idx, int64_t num_tokens, int top_k, int num_experts,
                                   const topology::RankMap& rank_map);

}  // namespace switchyard::dispatch
