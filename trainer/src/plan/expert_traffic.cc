// Expected all-to-all copies per token: the dispatch router on random affinities, then the
// dispatch layout over the EP group's ranks and nodes (method in expert_traffic.h).
#include "switchyard/trainer/plan/expert_traffic.h"

#include <random>
#include <vector>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/layout.h"
#include "switchyard/dispatch/router.h"
#include "switchyard/topology/rank_map.h"

namespace switchyard::trainer::plan {

ExpertTraffic simulate_expert_traffic(const ModelConfig& m, int ep, int ep_nodes, int64_t num_tokens, uint64_t seed) {
  const int E = static_cast<int>(m.n_routed_experts), K = static_cast<int>(m.num_experts_per_tok);
  SY_REQUIRE(ep >= 1 && ep_nodes >= 1 && ep % ep_nodes == 0,
             "plan: EP group of " << ep << " ranks cannot be spread evenly over " << ep_nodes << " nodes");
  SY_REQUIRE(num_tokens >= 1, "plan: num_tokens " << num_tokens << " must be >= 1");
  ExpertTraffic t;
  t.ep = ep;
  t.ep_nodes = ep_nodes;
  if (E == 0 || K == 0) return t;  // dense model: no all-to-all
  SY_REQUIRE(E % ep == 0, "plan: EP " << ep << " does not divide the " << E << " routed experts");

  dispatch::RouterConfig rc;
  rc.num_experts = E;
  rc.top_k = K;
  rc.num_groups = static_cast<int>(m.n_group);
  rc.top_groups = static_cast<int>(m.topk_group);
  rc.route_scale = m.routed_scaling_factor;
  rc.normalize = m.norm_topk_prob;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<float> scores(static_cast<size_t>(num_tokens) * E);
  for (float& s : scores) s = uni(rng);
  std::vector<int64_t> idx(static_cast<size_t>(num_tokens) * K);
  std::vector<float> w(idx.size());
  dispatch::route_group_limited(rc, scores.data(), nullptr, num_tokens, idx.data(), w.data());

  const auto rank_map = topology::RankMap::contiguous(ep, ep_nodes);
  const dispatch::DispatchLayout layout = dispatch::get_dispatch_layout(idx.data(), num_tokens, K, E, rank_map);
  const int per_node = ep / ep_nodes;
  double ranks = 0, nodes = 0, remote = 0, nvlink = 0;
  for (int64_t tok = 0; tok < num_tokens; ++tok) {
    const int home = static_cast<int>(tok % ep), home_node = rank_map.node_of(home);
    std::vector<int> ranks_on_node(ep_nodes, 0);
    for (int r = 0; r < ep; ++r)
      if (layout.in_rank(tok, r)) ++ranks_on_node[rank_map.node_of(r)];
    for (int n = 0; n < ep_nodes; ++n) {
      if (ranks_on_node[n] == 0) continue;
      ranks += ranks_on_node[n];
      nodes += 1;
      if (n == home_node) {
        // Local targets other than the home rank itself go over NVLink.
        nvlink += ranks_on_node[n] - (layout.in_rank(tok, home) ? 1 : 0);
      } else {
        remote += 1;
        // The network copy lands on the rail peer; the other targets are NVLink forwards.
        const int peer = rank_map.ranks_of_node(n)[rank_map.local_rank(home) % per_node];
        nvlink += ranks_on_node[n] - (layout.in_rank(tok, peer) ? 1 : 0);
      }
    }
  }
  const double T = static_cast<double>(num_tokens);
  t.experts_per_token = K;
  t.ranks_per_token = ranks / T;
  t.nodes_per_token = nodes / T;
  t.remote_nodes_per_token = remote / T;
  t.nvlink_copies_per_token = nvlink / T;
  return t;
}

}  // namespace switchyard::trainer::plan
