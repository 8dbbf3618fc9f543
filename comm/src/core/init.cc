// Communicator::init (bootstrap) and make_parallel_groups.
//
// Bootstrap: open the store (rank 0 hosts the TCP store; or a file store), agree on a job
// uid, publish (node, host, pid) per rank, build the RankMap, connect the transports
// (registry.cc), then a barrier over the transports so no rank still needs the store when
// rank 0 may leave.
#include <unistd.h>

#include <map>
#include <random>
#include <sstream>

#include "core/communicator_impl.h"
#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "transport/registry.h"

namespace switchyard::comm {
namespace {

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
std::string string_of(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

std::string random_uid() {
  std::random_device rd;
  std::ostringstream os;
  os << std::hex << (static_cast<uint64_t>(rd()) << 32 ^ rd() ^ static_cast<uint64_t>(::getpid()));
  return os.str().substr(0, 12);
}

std::unique_ptr<Store> open_store(const LaunchEnv& env, std::chrono::milliseconds timeout) {
  if (env.world_size == 1 && env.rendezvous.empty()) return make_memory_store();
  if (env.rendezvous.rfind("file:", 0) == 0) return make_file_store(env.rendezvous.substr(5));
  size_t colon = env.rendezvous.rfind(':');
  TcpStoreOptions o;
  o.host = env.rendezvous.substr(0, colon);
  if (o.host.size() > 2 && o.host.front() == '[' && o.host.back() == ']') o.host = o.host.substr(1, o.host.size() - 2);
  try {
    o.port = std::stoi(env.rendezvous.substr(colon + 1));
  } catch (...) {
    SY_THROW(InvalidArgument, "init: rendezvous '" << env.rendezvous << "' has no valid port");
  }
  o.token = env.token;
  o.is_server = env.rank == 0;
  o.timeout = timeout;
  SY_REQUIRE(!o.token.empty() || env.world_size == 1, "init: SY_TOKEN is not set");
  if (o.token.empty()) o.token = "single";
  return make_tcp_store(o);
}

}  // namespace

std::shared_ptr<Communicator> Communicator::init(const InitOptions& options) {
  return init(LaunchEnv::detect(), options);
}

std::shared_ptr<Communicator> Communicator::init(const LaunchEnv& env, const InitOptions& options) {
  log::set_rank(env.rank);
  auto timeout = options.timeout;
  SY_REQUIRE(timeout.count() > 0, "init: timeout must be > 0 ms");
  auto store = open_store(env, timeout);
  std::string prefix = env.rendezvous.rfind("file:", 0) == 0 && !env.job_id.empty() ? env.job_id + "/" : "";
  std::string where = env.rendezvous.empty() ? "single process" : "rendezvous " + env.rendezvous;

  if (env.rank == 0) store->set(prefix + "uid", bytes_of(random_uid()));
  std::string uid = string_of(store_get_all(*store, {prefix + "uid"}, {"rank 0"}, timeout, "init (" + where + ")")[0]);

  std::ostringstream info;
  info << env.node << "\n" << env.host << "\n" << ::getpid();
  store->set(prefix + "info/" + std::to_string(env.rank), bytes_of(info.str()));
  std::vector<std::string> keys, what;
  for (int r = 0; r < env.world_size; ++r) {
    keys.push_back(prefix + "info/" + std::to_string(r));
    what.push_back("rank " + std::to_string(r));
  }
  auto infos = store_get_all(*store, keys, what, timeout, "init (" + where + ", " + std::to_string(env.world_size) +
                                                              " ranks): waiting for ranks to arrive");
  std::map<std::string, int> node_ids;
  std::vector<int> node_of(static_cast<size_t>(env.world_size));
  std::vector<std::string> hosts(static_cast<size_t>(env.world_size));
  for (int r = 0; r < env.world_size; ++r) {
    std::istringstream is(string_of(infos[static_cast<size_t>(r)]));
    std::string node, host;
    std::getline(is, node);
    std::getline(is, host);
    node_of[static_cast<size_t>(r)] = node_ids.emplace(node, static_cast<int>(node_ids.size())).first->second;
    hosts[static_cast<size_t>(r)] = host;
  }
  topology::RankMap map(node_of);
  SY_INFO("comm", "init: rank " << env.rank << " of " << env.world_size << " (" << env.launcher << ", " << where
                                << "), " << map.describe());

  auto set = detail::connect_transports(env.rank, map, hosts, *store, prefix, uid, timeout);
  detail::Context::Setup setup;
  setup.rank = env.rank;
  setup.rank_map = map;
  setup.store = std::move(store);
  setup.shm = std::move(set.shm);
  setup.remote = std::move(set.remote);
  setup.route = std::move(set.route);
  setup.job_uid = uid;
  setup.timeout = timeout;
  for (const std::string& h : hosts) setup.ranks_on_host += h == hosts[static_cast<size_t>(env.rank)] ? 1 : 0;
  auto context = std::make_shared<detail::Context>(std::move(setup));
  context->start();
  auto owner = std::make_shared<detail::ContextOwner>(context);
  std::vector<int> all(static_cast<size_t>(env.world_size));
  for (int r = 0; r < env.world_size; ++r) all[static_cast<size_t>(r)] = r;
  auto world = std::make_shared<detail::CommunicatorImpl>(owner, std::move(all), 0);
  world->barrier();
  return world;
}

ParallelGroups make_parallel_groups(Communicator& world, int ep, int pp, int dp) {
  SY_REQUIRE(ep >= 1 && pp >= 1 && dp >= 1, "make_parallel_groups: ep " << ep << ", pp " << pp << ", dp " << dp
                                                                        << " must all be >= 1");
  SY_REQUIRE(static_cast<int64_t>(ep) * pp * dp == world.size(),
             "make_parallel_groups: ep " << ep << " x pp " << pp << " x dp " << dp << " = "
                                         << static_cast<int64_t>(ep) * pp * dp << " != world size " << world.size());
  int r = world.rank();
  int e = r % ep, d = (r / ep) % dp, p = r / (ep * dp);
  ParallelGroups g;
  g.ep = world.split(r / ep, e);
  g.pp = world.split(d * ep + e, p);
  g.dp = world.split(p * ep + e, d);
  return g;
}

}  // namespace switchyard::comm
