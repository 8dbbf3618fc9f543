// RankMap: node membership, local indices and rails.
#include "switchyard/topology/rank_map.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::topology {

RankMap::RankMap(const std::vector<int>& node_of_rank) {
  SY_REQUIRE(!node_of_rank.empty(), "rank map: no ranks");
  std::map<int, int> dense;
  node_of_rank_.resize(node_of_rank.size());
  local_rank_.resize(node_of_rank.size());
  for (size_t r = 0; r < node_of_rank.size(); ++r) {
    int id = node_of_rank[r];
    SY_REQUIRE(id >= 0, "rank map: rank " << r << " has node id " << id << " (must be >= 0)");
    auto [it, inserted] = dense.emplace(id, static_cast<int>(dense.size()));
    if (inserted) ranks_of_node_.emplace_back();
    int node = it->second;
    node_of_rank_[r] = node;
    local_rank_[r] = static_cast<int>(ranks_of_node_[node].size());
    ranks_of_node_[node].push_back(static_cast<int>(r));
  }
}

RankMap RankMap::contiguous(int size, int num_nodes) {
  SY_REQUIRE(size >= 1, "rank map: size " << size << " must be >= 1");
  SY_REQUIRE(num_nodes >= 1 && num_nodes <= size && size % num_nodes == 0,
             "rank map: " << size << " ranks cannot be spread evenly over " << num_nodes << " nodes");
  std::vector<int> nodes(size);
  int per_node = size / num_nodes;
  for (int r = 0; r < size; ++r) nodes[r] = r / per_node;
  return RankMap(nodes);
}

void RankMap::check_rank(int rank, const char* what) const {
  SY_REQUIRE(rank >= 0 && rank < size(),
             "rank map: " << what << ": rank " << rank << " out of range [0, " << size() << ")");
}

int RankMap::node_of(int rank) const {
  check_rank(rank, "node_of");
  return node_of_rank_[rank];
}

const std::vector<int>& RankMap::ranks_of_node(int node) const {
  SY_REQUIRE(node >= 0 && node < num_nodes(), "rank map: node " << node << " out of range [0, " << num_nodes() << ")");
  return ranks_of_node_[node];
}

int RankMap::local_rank(int rank) const {
  check_rank(rank, "local_rank");
  return local_rank_[rank];
}

int RankMap::rail_peer(int rank, int node) const {
  const auto& ranks = ranks_of_node(node);
  int l = local_rank(rank);
  return l < static_cast<int>(ranks.size()) ? ranks[l] : -1;
}

std::vector<int> RankMap::rail(int rank) const {
  std::vector<int> out;
  for (int n = 0; n < num_nodes(); ++n) {
    int p = rail_peer(rank, n);
    if (p >= 0) out.push_back(p);
  }
  std::sort(out.begin(), out.end());  // node order differs from rank order when nodes interleave
  return out;
}

bool RankMap::nodes_contiguous() const {
  for (const auto& ranks : ranks_of_node_)
    if (ranks.back() - ranks.front() + 1 != static_cast<int>(ranks.size())) return false;
  return true;
}

std::vector<int> RankMap::node_major_order() const {
  std::vector<int> order;
  order.reserve(node_of_rank_.size());
  for (const auto& ranks : ranks_of_node_) order.insert(order.end(), ranks.begin(), ranks.end());
  return order;
}

bool RankMap::uniform() const {
  for (const auto& ranks : ranks_of_node_)
    if (ranks.size() != ranks_of_node_.front().size()) return false;
  return true;
}

int RankMap::max_local_size() const {
  size_t m = 0;
  for (const auto& ranks : ranks_of_node_) m = std::max(m, ranks.size());
  return static_cast<int>(m);
}

std::string RankMap::describe() const {
  std::ostringstream os;
  os << size() << " rank" << (size() == 1 ? "" : "s") << " on " << num_nodes() << " node"
     << (num_nodes() == 1 ? "" : "s") << ":";
  for (int n = 0; n < num_nodes(); ++n) {
    os << " node" << n << "={";
    for (size_t i = 0; i < ranks_of_node_[n].size(); ++i) os << (i ? "," : "") << ranks_of_node_[n][i];
    os << "}";
  }
  return os.str();
}

const char* link_class_name(LinkClass c) {
  switch (c) {
    case LinkClass::kSameDevice:
      return "same-device";
    case LinkClass::kSameNode:
      return "same-node";
    case LinkClass::kSamePcieSwitch:
      return "same-pcie-switch";
    case LinkClass::kNetwork:
      return "network";
  }
  return "?";
}

}  // namespace switchyard::topology
