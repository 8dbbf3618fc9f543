// JobEnv: where this process sits in a job started by sy-run, read from its environment.
//
// sy-run sets SY_RANK, SY_WORLD_SIZE, SY_LOCAL_RANK, SY_NODE, SY_NUM_NODES and, with
// --rank-map, SY_RANK_MAP (the cluster JSON path). Other launchers (torchrun, Open MPI, Slurm)
// are the comm bootstrap's business; this reads only the SY_ variables. Pure function of the
// environment; thread-safe as long as nobody calls setenv concurrently.
#pragma once

#include <optional>
#include <string>

#include "switchyard/topology/cluster.h"

namespace switchyard::topology {

struct JobEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int node = 0;
  int num_nodes = 1;
  std::string rank_map;  // SY_RANK_MAP, empty when absent

  // nullopt when SY_RANK is not set (not under sy-run). Throws InvalidArgument naming the
  // variable when one is missing or not a number in range.
  static std::optional<JobEnv> from_environment();

  // The job's cluster: SY_RANK_MAP when set, else Cluster::local(world_size, num_nodes) (this
  // machine's hardware on every virtual node; plain contiguous blocks if hwloc fails). Throws
  // InvalidArgument when it disagrees with the environment (world size, node, local rank).
  Cluster cluster() const;
};

}  // namespace switchyard::topology
