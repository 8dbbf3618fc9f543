// ParallelLayout: the DP x PP x EP arrangement of a training job's ranks, and its groups.
//
// world size = pp * dp * ep; world rank = (pp_index * dp + dp_index) * ep + ep_index (EP
// innermost, so an EP group stays inside a node where it fits; comm::make_parallel_groups).
// As in DeepSeek-V3, every rank of an EP group reads its own slice of the global batch:
// the "data ranks" of a pipeline stage are its EP x DP ranks, data_rank = dp_index * ep +
// ep_index. Non-expert parameters are replicated over those (the replica group) and
// experts are sharded over EP and replicated over DP.
//
// Collective construction (make_parallel_groups and split over the world). Not thread-safe.
#pragma once

#include <memory>
#include <string>

#include "switchyard/comm/communicator.h"

namespace switchyard::trainer::dist {

struct ParallelLayout {
  int ep = 1;
  int pp = 1;
  int dp = 1;
  int size() const { return ep * pp * dp; }
  // Throws InvalidArgument naming the bad value (sizes < 1, product != world_size).
  void validate(int world_size) const;
  std::string to_string() const;  // "EP 4 x PP 1 x DP 1"
};

struct ParallelGroups {
  ParallelLayout layout;
  int ep_index = 0, pp_index = 0, dp_index = 0;
  std::shared_ptr<comm::Communicator> world, ep, pp, dp;
  std::shared_ptr<comm::Communicator> replica;  // the EP x DP ranks of this pipeline stage
  int data_rank() const { return dp_index * layout.ep + ep_index; }
  int data_ranks() const { return layout.ep * layout.dp; }
};

// Collective over world.
ParallelGroups make_groups(std::shared_ptr<comm::Communicator> world, const ParallelLayout& layout);

}  // namespace switchyard::trainer::dist
