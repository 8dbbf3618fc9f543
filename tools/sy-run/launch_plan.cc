// LaunchPlan: argument checks and the SY_* environment of each rank (see launch_plan.h).
#include "launch_plan.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <climits>
#include <cstdlib>
#include <optional>
#include <sstream>

#include "switchyard/common/error.h"
#include "switchyard/topology/cluster.h"
#include "switchyard/topology/rank_map.h"
#include "unique_fd.h"

namespace switchyard::run {
namespace {

// Upper bound on -n: far above any single host, low enough to catch a typo early.
constexpr int kMaxLocalRanks = 1024;

std::string absolute_path(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) SY_THROW(InvalidArgument, "--rank-map " << path << ": " << errno_text(errno));
  std::string result(resolved);
  ::free(resolved);
  return result;
}

// The node placement of a local job: contiguous blocks, or the cluster file's rank map.
topology::RankMap local_rank_map(const LaunchOptions& o) {
  if (o.rank_map_path.empty()) {
    SY_REQUIRE(o.num_nodes >= 1 && o.num_nodes <= o.num_ranks,
               "--nodes must be between 1 and -n (" << o.num_ranks << "), got " << o.num_nodes);
    SY_REQUIRE(o.num_ranks % o.num_nodes == 0, "-n " << o.num_ranks << " ranks cannot be split evenly over --nodes "
                                                     << o.num_nodes << " (ranks % nodes must be 0)");
    return topology::RankMap::contiguous(o.num_ranks, o.num_nodes);
  }
  SY_REQUIRE(o.num_nodes == 1, "--nodes and --rank-map cannot be combined (the rank map places the ranks)");
  std::optional<topology::Cluster> loaded;
  try {
    loaded = topology::Cluster::load_json(o.rank_map_path);
  } catch (const Error& e) {
    SY_THROW(InvalidArgument, "--rank-map: " << e.message());
  }
  const topology::Cluster& cluster = *loaded;
  SY_REQUIRE(cluster.num_ranks() == o.num_ranks, "--rank-map " << o.rank_map_path << " describes "
                                                               << cluster.num_ranks() << " ranks but -n is "
                                                               << o.num_ranks);
  return cluster.rank_map();
}

// "ADDR:PORT" with a non-empty address and a port in 1..65535.
void check_master(const std::string& master) {
  SY_REQUIRE(!master.empty(), "multi-host mode needs --master ADDR:PORT (the host running global rank 0)");
  size_t colon = master.rfind(':');
  SY_REQUIRE(colon != std::string::npos && colon > 0 && colon + 1 < master.size(),
             "--master must be ADDR:PORT, got '" << master << "'");
  std::string port = master.substr(colon + 1);
  bool digits = port.size() <= 5;
  for (char c : port) digits = digits && std::isdigit(static_cast<unsigned char>(c));
  SY_REQUIRE(digits && std::atoi(port.c_str()) >= 1 && std::atoi(port.c_str()) <= 65535,
             "--master port must be 1..65535, got '" << port << "'");
}

void check_token(const std::string& token) {
  SY_REQUIRE(!token.empty(),
             "multi-host mode needs the job token: pass --token T or set SY_TOKEN "
             "(the same value on every host)");
  for (char c : token) {
    SY_REQUIRE(std::isgraph(static_cast<unsigned char>(c)), "--token must be printable without spaces");
  }
}

std::vector<std::pair<std::string, std::string>> rank_env(const LaunchPlan& plan, const std::string& token, int rank,
                                                          int local_rank, int local_size, int node) {
  return {{"SY_RANK", std::to_string(rank)},
          {"SY_WORLD_SIZE", std::to_string(plan.world_size)},
          {"SY_LOCAL_RANK", std::to_string(local_rank)},
          {"SY_LOCAL_SIZE", std::to_string(local_size)},
          {"SY_NODE", std::to_string(node)},
          {"SY_NUM_NODES", std::to_string(plan.num_nodes)},
          {"SY_RENDEZVOUS", plan.rendezvous},
          {"SY_TOKEN", token},
          {"SY_JOB_ID", plan.job_id}};
}

}  // namespace

const std::vector<std::string>& protocol_variables() {
  static const std::vector<std::string> kNames = {"SY_RANK",   "SY_WORLD_SIZE", "SY_LOCAL_RANK", "SY_LOCAL_SIZE",
                                                  "SY_NODE",   "SY_NUM_NODES",  "SY_RENDEZVOUS", "SY_TOKEN",
                                                  "SY_JOB_ID", "SY_RANK_MAP"};
  return kNames;
}

std::string random_hex(int num_bytes) {
  UniqueFd fd(::open("/dev/urandom", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) SY_THROW(IoError, "open /dev/urandom: " << errno_text(errno));
  std::string bytes(num_bytes, '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) SY_THROW(IoError, "read /dev/urandom: " << errno_text(n < 0 ? errno : EIO));
    done += n;
  }
  static const char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char b : bytes) {
    hex += kDigits[b >> 4];
    hex += kDigits[b & 15];
  }
  return hex;
}

int pick_free_port() {
  UniqueFd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) SY_THROW(IoError, "socket: " << errno_text(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    SY_THROW(IoError, "bind 127.0.0.1:0: " << errno_text(errno));
  }
  socklen_t len = sizeof addr;
  if (::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    SY_THROW(IoError, "getsockname: " << errno_text(errno));
  }
  return ntohs(addr.sin_port);
}

std::string LaunchPlan::describe() const {
  std::ostringstream s;
  s << ranks.size() << (ranks.size() == 1 ? " rank" : " ranks");
  if (multi_host) {
    s << " (global " << ranks.front().rank << ".." << ranks.back().rank << " of " << world_size << ")";
  }
  s << " on " << num_nodes << (num_nodes == 1 ? " node" : " nodes") << ", rendezvous " << rendezvous << ", job "
    << job_id;
  return s.str();
}

LaunchPlan make_launch_plan(const LaunchOptions& o) {
  SY_REQUIRE(o.num_ranks >= 1 && o.num_ranks <= kMaxLocalRanks,
             "-n must be between 1 and " << kMaxLocalRanks << ", got " << o.num_ranks);
  SY_REQUIRE(!o.program.empty(), "no program to run: usage is sy-run -n N [flags] -- PROGRAM ARGS...");

  LaunchPlan plan;
  plan.program = o.program;
  plan.multi_host = o.num_hosts != 1 || o.host_rank != 0 || !o.master.empty();
  if (plan.multi_host) {
    SY_REQUIRE(o.num_hosts >= 1, "--nnodes must be at least 1, got " << o.num_hosts);
    SY_REQUIRE(o.host_rank >= 0 && o.host_rank < o.num_hosts,
               "--node-rank must be between 0 and --nnodes - 1 (" << o.num_hosts - 1 << "), got " << o.host_rank);
    SY_REQUIRE(o.num_nodes == 1 && o.rank_map_path.empty(),
               "--nodes and --rank-map are for one-host jobs; with --nnodes each host is one node");
    SY_REQUIRE(static_cast<long>(o.num_hosts) * o.num_ranks <= INT_MAX, "--nnodes * -n is too large");
    check_master(o.master);
    std::string token = o.token;
    if (token.empty()) {
      const char* env = std::getenv("SY_TOKEN");
      if (env != nullptr) token = env;
    }
    check_token(token);
    plan.world_size = o.num_hosts * o.num_ranks;
    plan.num_nodes = o.num_hosts;
    plan.rendezvous = o.master;
    const char* job = std::getenv("SY_JOB_ID");
    plan.job_id = job != nullptr && *job != '\0' ? std::string(job) : "job-" + o.master;
    for (int local = 0; local < o.num_ranks; ++local) {
      int rank = o.host_rank * o.num_ranks + local;
      plan.ranks.push_back({rank, rank_env(plan, token, rank, local, o.num_ranks, o.host_rank)});
    }
    return plan;
  }

  SY_REQUIRE(o.token.empty(), "--token is only for multi-host mode (--nnodes/--master); local jobs get a random one");
  topology::RankMap map = local_rank_map(o);
  std::string rank_map_abs = o.rank_map_path.empty() ? std::string() : absolute_path(o.rank_map_path);
  std::string token = random_hex(16);
  plan.world_size = o.num_ranks;
  plan.num_nodes = map.num_nodes();
  plan.rendezvous = "127.0.0.1:" + std::to_string(pick_free_port());
  plan.job_id = "job-" + random_hex(4) + "-" + std::to_string(::getpid());
  for (int rank = 0; rank < o.num_ranks; ++rank) {
    RankLaunch launch{rank, rank_env(plan, token, rank, map.local_rank(rank), map.local_size(rank), map.node_of(rank))};
    if (!rank_map_abs.empty()) launch.env.emplace_back("SY_RANK_MAP", rank_map_abs);
    plan.ranks.push_back(std::move(launch));
  }
  return plan;
}

}  // namespace switchyard::run
