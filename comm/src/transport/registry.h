// The ordered transport table (NCCL's transport.cc idea): for every peer, the first backend
// that can reach it carries its traffic.
//   1. shm  — same node (same SY_NODE, hence the same host) and self.
//   2. ucx  — everything else (other nodes, virtual or real). Ranks on different nodes
//             never share memory, even on one machine, so the network paths really run.
// Later: cuda_ipc and nccl ahead of these for device buffers.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/comm/store.h"
#include "switchyard/comm/transport/transport.h"
#include "switchyard/topology/rank_map.h"
#include "transport/shm/shm_transport.h"

namespace switchyard::comm::detail {

struct TransportSet {
  std::unique_ptr<ShmTransport> shm;
  std::unique_ptr<Transport> remote;  // null with one node
  std::vector<Transport*> route;      // per world rank
};

// Collective over all ranks. `hosts[r]` is the host name of rank r (nodes must not span
// hosts). Throws Unsupported when other nodes exist and the build has no UCX transport.
TransportSet connect_transports(int rank, const topology::RankMap& map, const std::vector<std::string>& hosts,
                                Store& store, const std::string& key_prefix, const std::string& job_uid,
                                std::chrono::milliseconds timeout);

}  // namespace switchyard::comm::detail
