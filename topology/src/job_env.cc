// JobEnv: parsing the SY_ variables sy-run sets and checking them against the rank map.
#include "switchyard/topology/job_env.h"

#include <cstdlib>

#include "switchyard/common/error.h"
#include "switchyard/common/log.h"

namespace switchyard::topology {

namespace {

int env_int(const char* name, int min_value, int max_value) {
  const char* text = std::getenv(name);
  SY_REQUIRE(text && *text, "job environment: " << name << " is not set (SY_RANK is, so sy-run should set it too)");
  char* end = nullptr;
  long v = std::strtol(text, &end, 10);
  SY_REQUIRE(*end == '\0', "job environment: " << name << "='" << text << "' is not an integer");
  SY_REQUIRE(v >= min_value && v <= max_value,
             "job environment: " << name << "=" << v << " out of range [" << min_value << ", " << max_value << "]");
  return static_cast<int>(v);
}

}  // namespace

std::optional<JobEnv> JobEnv::from_environment() {
  if (!std::getenv("SY_RANK")) return std::nullopt;
  constexpr int kMax = 1 << 24;
  JobEnv e;
  e.world_size = env_int("SY_WORLD_SIZE", 1, kMax);
  e.rank = env_int("SY_RANK", 0, e.world_size - 1);
  e.num_nodes = std::getenv("SY_NUM_NODES") ? env_int("SY_NUM_NODES", 1, e.world_size) : 1;
  e.node = std::getenv("SY_NODE") ? env_int("SY_NODE", 0, e.num_nodes - 1) : 0;
  e.local_rank = std::getenv("SY_LOCAL_RANK") ? env_int("SY_LOCAL_RANK", 0, e.world_size - 1) : e.rank;
  if (const char* m = std::getenv("SY_RANK_MAP")) e.rank_map = m;
  return e;
}

namespace {

Cluster local_or_contiguous(int world_size, int num_nodes) {
  try {
    return Cluster::local(world_size, num_nodes);
  } catch (const IoError& e) {
    SY_WARN("topo", "job without a rank map: cannot discover this machine ("
                        << e.message() << "); using contiguous nodes without hardware");
    return Cluster::contiguous(world_size, num_nodes);
  }
}

}  // namespace

Cluster JobEnv::cluster() const {
  Cluster c = rank_map.empty() ? local_or_contiguous(world_size, num_nodes) : Cluster::load_json(rank_map);
  const std::string src = rank_map.empty() ? "contiguous layout" : "rank map " + rank_map;
  c.require_num_ranks(world_size, "job environment (SY_WORLD_SIZE)");
  SY_REQUIRE(c.num_nodes() == num_nodes, "job environment: SY_NUM_NODES=" << num_nodes << " but the " << src << " has "
                                                                          << c.num_nodes() << " nodes");
  SY_REQUIRE(c.node_of(rank) == node, "job environment: rank " << rank << " has SY_NODE=" << node << " but the " << src
                                                               << " puts it on node " << c.node_of(rank));
  SY_REQUIRE(c.local_rank(rank) == local_rank, "job environment: rank " << rank << " has SY_LOCAL_RANK=" << local_rank
                                                                        << " but the " << src << " gives local rank "
                                                                        << c.local_rank(rank));
  return c;
}

}  // namespace switchyard::topology
