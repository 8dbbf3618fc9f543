// Cluster: the ranks of a job, the host each lives on, and the GPU and NIC each uses.
//
// A cluster comes from a JSON file (the format is in docs/topology.md):
//   { "hosts": [ {"name": "node0", "xml": "h100x8.xml"}, {"name": "node1", "xml": "h100x8.xml"} ],
//     "ranks": [ {"host": "node0", "gpu": 0}, {"host": "node0", "gpu": 1}, ... ] }
// where each "xml" is an hwloc XML file relative to the JSON file (omit it for a host without
// a simulated topology), or from a plain contiguous layout with no hardware (sy-run --nodes).
// Node n of rank_map() is the n-th host in order of first use by rank (the hosts array order
// when hosts are used in that order, as they usually are).
//
// A Cluster is an immutable value after construction; copies share the loaded hosts; all
// methods are const and thread-safe. Rank and node arguments out of range throw InvalidArgument.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "switchyard/topology/host_topology.h"
#include "switchyard/topology/rank_map.h"

namespace switchyard::topology {

class Cluster {
 public:
  // Throws IoError (file missing or unreadable, XML missing) or InvalidArgument (bad JSON,
  // unknown host, GPU index out of range, ...) naming the file and the offending entry.
  static Cluster load_json(const std::string& path);
  // num_ranks ranks in contiguous blocks over num_nodes hosts with no hardware description.
  static Cluster contiguous(int num_ranks, int num_nodes);
  // This machine as discovered by hwloc, as num_nodes virtual nodes (contiguous blocks, as
  // sy-run --nodes places ranks); local rank l uses GPU l % num_gpus when it has GPUs.
  static Cluster local(int num_ranks, int num_nodes = 1);

  int num_ranks() const { return rank_map_.size(); }
  int num_nodes() const { return rank_map_.num_nodes(); }
  const RankMap& rank_map() const { return rank_map_; }
  const std::string& source() const { return source_; }  // JSON path, "contiguous" or "local"

  // Throws InvalidArgument when this cluster does not describe exactly n ranks; `who` names
  // the caller in the message ("sy-run -n").
  void require_num_ranks(int n, const std::string& who) const;

  int node_of(int rank) const { return rank_map_.node_of(rank); }
  int local_rank(int rank) const { return rank_map_.local_rank(rank); }
  const std::string& node_name(int node) const;
  // The hardware of a node, or nullptr when it has no topology (contiguous clusters).
  const HostTopology* host(int node) const;

  int gpu_of(int rank) const;  // GPU index on its host, -1 if none
  int nic_of(int rank) const;  // index of the NIC nearest its GPU, -1 if unknown
  std::string nic_name(int rank) const;  // "" if unknown
  // The rail a rank sends inter-node traffic on: its NIC index when known, else its local rank.
  int rail_of(int rank) const;
  // The ranks on every node with this rank's local index (this one included, ascending).
  std::vector<int> rail_peers(int rank) const { return rank_map_.rail(rank); }

  // How ranks a and b are connected: kSameDevice for the same rank or the same GPU; the host's
  // GPU link class for two GPUs on one host; kSameNode for other ranks on one host; kNetwork
  // across hosts.
  LinkClass link_class(int a, int b) const;

  std::string summary() const;  // one line per node and per rank
  std::string to_json() const;  // {"source", "num_ranks", "num_nodes", "nodes": [...], "ranks": [...]}
  // One rank: "rank 1/4: node 0 (node0) local_rank 1/2 gpu 2 nic mlx5_1 rail 1 rail_peers 1,3"
  std::string rank_summary(int rank) const;
  // One rank as a one-line JSON object: rank, world_size, node, node_name, num_nodes, local_rank,
  // local_size, gpu, nic, rail, rail_peers.
  std::string rank_json(int rank) const;

 private:
  Cluster(RankMap map, std::vector<std::string> node_names, std::vector<std::shared_ptr<const HostTopology>> hosts,
          std::vector<int> gpu_of_rank, std::string source);
  void check_rank(int rank, const char* what) const;

  RankMap rank_map_;
  std::vector<std::string> node_names_;  // [num_nodes]
  std::vector<std::shared_ptr<const HostTopology>> hosts_;  // [num_nodes], may hold nullptr
  std::vector<int> gpu_of_rank_;  // [num_ranks]
  std::string source_;
};

}  // namespace switchyard::topology
