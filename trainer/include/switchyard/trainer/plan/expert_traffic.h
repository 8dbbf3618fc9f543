// All-to-all bytes of one MoE layer under node-limited routing, from the dispatch layer's
// router and layout statistics.
//
// Method: route num_tokens tokens with i.i.d. uniform(0,1) affinities (no bias, so the
// expected load is balanced, as the auxiliary-loss-free balancing aims for) through
// dispatch::route_group_limited with the model's groups (V3: 8 groups, 4 kept), compute
// dispatch::get_dispatch_layout over an EP group of ep ranks on ep_nodes nodes, and count
// per token: the remote nodes it reaches (one network copy each, as DeepEP sends a token
// once per node then forwards over NVLink) and the ranks it reaches (one intra-node copy
// each, except the rank the network copy lands on). Tokens start evenly on the ranks.
//
// Constraints: deterministic for a seed; thread-safe.
#pragma once

#include <cstdint>

#include "switchyard/trainer/config.h"

namespace switchyard::trainer::plan {

struct ExpertTraffic {
  int ep = 1, ep_nodes = 1;
  double experts_per_token = 0;  // K (logical copies)
  double ranks_per_token = 0;  // distinct ranks reached (rank-level dedup)
  double nodes_per_token = 0;  // distinct nodes reached
  double remote_nodes_per_token = 0;  // distinct nodes other than the token's own
  double nvlink_copies_per_token = 0;  // intra-node hops (local targets + forwards on remote nodes)
};

// Throws InvalidArgument when ep does not divide the experts or ep_nodes does not divide ep.
ExpertTraffic simulate_expert_traffic(const ModelConfig& config, int ep, int ep_nodes, int64_t num_tokens = 4096,
                                      uint64_t seed = 1);

}  // namespace switchyard::trainer::plan
