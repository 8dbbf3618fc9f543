// RankMap: which node each rank of a job lives on, and what follows from it.
//
// This is what node-limited routing and the hierarchical collectives need: the node of
// each rank, the ranks of each node, each rank's local index, and its rail peers (the
// ranks on other nodes with the same local index, which in a GPU cluster share a NIC
// rail). Nodes are numbered 0..num_nodes-1 in order of first appearance by rank.
#pragma once

#include <string>
#include <vector>

namespace switchyard::topology {

class RankMap {
 public:
  // node_of_rank[r] = node id of rank r; ids need not be dense (they are renumbered in
  // order of first appearance). Throws InvalidArgument on an empty map or negative ids.
  explicit RankMap(const std::vector<int>& node_of_rank);
  // Ranks spread over num_nodes nodes in contiguous blocks (rank / (size / num_nodes)).
  // size must be divisible by num_nodes.
  static RankMap contiguous(int size, int num_nodes);

  int size() const { return static_cast<int>(node_of_rank_.size()); }
  int num_nodes() const { return static_cast<int>(ranks_of_node_.size()); }
  int node_of(int rank) const;
  const std::vector<int>& ranks_of_node(int node) const;
  // Index of rank among the ranks of its node (0-based, in rank order).
  int local_rank(int rank) const;
  int local_size(int rank) const { return static_cast<int>(ranks_of_node(node_of(rank)).size()); }
  bool same_node(int a, int b) const { return node_of(a) == node_of(b); }
  // The rank on `node` with the same local index as `rank`, or -1 if that node has fewer ranks.
  int rail_peer(int rank, int node) const;
  // All ranks (this one included, ascending) with the same local index as `rank`.
  std::vector<int> rail(int rank) const;
  // True when every node holds a contiguous block of ranks.
  bool nodes_contiguous() const;
  // A permutation of ranks that keeps each node's ranks together (node order, then rank).
  std::vector<int> node_major_order() const;
  // The lowest rank of a node: the one that speaks for it in hierarchical collectives.
  int leader(int node) const { return ranks_of_node(node).front(); }
  // True when every node holds the same number of ranks (rails then span all nodes).
  bool uniform() const;
  // Largest number of ranks on one node.
  int max_local_size() const;
  const std::vector<int>& node_of_rank() const { return node_of_rank_; }
  std::string describe() const;  // "4 ranks on 2 nodes: node0={0,1} node1={2,3}"

 private:
  void check_rank(int rank, const char* what) const;
  std::vector<int> node_of_rank_;
  std::vector<std::vector<int>> ranks_of_node_;
  std::vector<int> local_rank_;
};

// How two ranks are connected, by scope (see docs/topology.md): the same GPU or rank; the same
// host over its intra-node path (NVLink, or host shared memory); the same host where only a
// PCIe switch joins two GPUs without NVLink; different hosts.
enum class LinkClass { kSameDevice = 0, kSameNode = 1, kSamePcieSwitch = 2, kNetwork = 3 };
const char* link_class_name(LinkClass c);

}  // namespace switchyard::topology
