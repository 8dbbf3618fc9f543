// get_dispatch_layout: counts per rank, node and expert; is_token_in_rank.
#include "switchyard/dispatch/layout.h"

#include "switchyard/common/error.h"

namespace switchyard::dispatch {

void validate_topk_idx(const int64_t* topk_idx, int64_t num_tokens, int top_k, int num_experts) {
  if (num_tokens < 0) SY_THROW(InvalidArgument, "dispatch: num_tokens = " << num_tokens << " is negative");
  if (top_k < 1) SY_THROW(InvalidArgument, "dispatch: top_k = " << top_k << " must be >= 1");
  if (num_tokens > 0 && topk_idx == nullptr) SY_THROW(InvalidArgument, "dispatch: topk_idx is null");
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t* row = topk_idx + t * top_k;
    for (int k = 0; k < top_k; ++k) {
      const int64_t e = row[k];
      if (e < -1 || e >= num_experts)
        SY_THROW(InvalidArgument, "dispatch: topk_idx[" << t << "][" << k << "] = " << e
                                                        << " is out of range [-1, " << num_experts << ")");
      if (e < 0) continue;
      for (int j = 0; j < k; ++j)
        if (row[j] == e)
          SY_THROW(InvalidArgument, "dispatch: token " << t << " selects expert " << e << " twice (slots " << j
                                                       << " and " << k << ")");
    }
  }
}

DispatchLayout get_dispatch_layout(const int64_t* topk_idx, int64_t num_tokens, int top_k, int num_experts,
                                   const topology::RankMap& rank_map) {
  const int R = rank_map.size();
  if (num_experts <= 0 || num_experts % R != 0)
    SY_THROW(InvalidArgument, "dispatch: num_experts = " << num_experts << " is not a positive multiple of the "
                                                         << R << " ranks");
  validate_topk_idx(topk_idx, num_tokens, top_k, num_experts);
  const int per_rank = num_experts / R;
  DispatchLayout l;
  l.num_tokens = num_tokens;
  l.top_k = top_k;
  l.num_tokens_per_rank.assign(R, 0);
  l.num_tokens_per_node.assign(rank_map.num_nodes(), 0);
  l.num_tokens_per_expert.assign(num_experts, 0);
  l.is_token_in_rank.assign(num_tokens * R, 0);
  std::vector<uint8_t> in_node(rank_map.num_nodes());
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::fill(in_node.begin(), in_node.end(), 0);
    for (int k = 0; k < top_k; ++k) {
      const int64_t e = topk_idx[t * top_k + k];
      if (e < 0) continue;
      ++l.num_tokens_per_expert[e];
      const int r = static_cast<int>(e / per_rank);
      uint8_t& in = l.is_token_in_rank[t * R + r];
      if (!in) {
        in = 1;
        ++l.num_tokens_per_rank[r];
      }
      const int n = rank_map.node_of(r);
      if (!in_node[n]) {
        in_node[n] = 1;
        ++l.num_tokens_per_node[n];
      }
    }
  }
  return l;
}

}  // namespace switchyard::dispatch
