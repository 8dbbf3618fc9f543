// Transport table: which backend carries each peer (see registry.h).
#include "transport/registry.h"

#include "switchyard/common/error.h"
#include "switchyard/common/log.h"

#ifdef SY_HAVE_UCX_TRANSPORT
#include "transport/ucx/ucx_transport.h"
#endif

namespace switchyard::comm::detail {

TransportSet connect_transports(int rank, const topology::RankMap& map, const std::vector<std::string>& hosts,
                                Store& store, const std::string& prefix, const std::string& job_uid,
                                std::chrono::milliseconds timeout) {
  TransportSet set;
  int node = map.node_of(rank);
  const std::vector<int>& local = map.ranks_of_node(node);
  for (int r : local)
    SY_REQUIRE(hosts[static_cast<size_t>(r)] == hosts[static_cast<size_t>(rank)],
               "init: ranks " << rank << " and " << r << " share a node name but run on hosts "
                              << hosts[static_cast<size_t>(rank)] << " and " << hosts[static_cast<size_t>(r)]
                              << " (SY_NODE must differ between hosts)");
  set.shm = make_shm_transport(rank, local, store, prefix, job_uid, timeout);
  std::vector<int> remote;
  for (int r = 0; r < map.size(); ++r)
    if (!map.same_node(r, rank)) remote.push_back(r);
  if (!remote.empty()) {
#ifdef SY_HAVE_UCX_TRANSPORT
    set.remote = make_ucx_transport(rank, map.size(), store, prefix + "ucx/", remote);
#else
    SY_THROW(Unsupported, "init: rank " << remote.front() << " is on another node ("
                                        << map.describe() << ") and this build has no UCX transport");
#endif
  }
  set.route.assign(static_cast<size_t>(map.size()), nullptr);
  for (int r = 0; r < map.size(); ++r) {
    Transport* t = set.shm->can_reach(r) ? static_cast<Transport*>(set.shm.get()) : nullptr;
    if (!t && set.remote && set.remote->can_reach(r)) t = set.remote.get();
    SY_REQUIRE(t, "init: no transport reaches rank " << r << " from rank " << rank);
    set.route[static_cast<size_t>(r)] = t;
  }
  SY_DEBUG("comm", "transports: shm to " << local.size() << " local ranks, "
                                         << (set.remote ? set.remote->name() : "none") << " to " << remote.size()
                                         << " remote ranks");
  return set;
}

}  // namespace switchyard::comm::detail
