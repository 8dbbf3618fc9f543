// LaunchPlan: which ranks sy-run starts on this host and the environment each one gets.
//
// Built from the command line before any process exists, so every argument error is
// found up front (InvalidArgument naming the flag and its value; sy-run exits 2).
// Two modes:
//   local       all ranks of the job on this host, spread over --nodes virtual nodes in
//               contiguous blocks or placed by a --rank-map cluster file; sy-run picks a
//               free rendezvous port on 127.0.0.1 and a random job token.
//   multi-host  one sy-run per host (like torchrun): --nnodes H --node-rank I
//               --master ADDR:PORT, token from --token or $SY_TOKEN; this host runs
//               global ranks I*n .. I*n+n-1 of H*n.
// The environment protocol is documented in docs/launcher.md.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace switchyard::run {

struct LaunchOptions {
  int num_ranks = 0;  // -n: ranks started on this host
  int num_nodes = 1;  // --nodes: virtual nodes (local mode)
  std::string rank_map_path;  // --rank-map: cluster JSON (local mode)
  int num_hosts = 1;  // --nnodes: hosts with one sy-run each (multi-host mode)
  int host_rank = 0;  // --node-rank: index of this host
  std::string master;  // --master ADDR:PORT (multi-host mode)
  std::string token;  // --token; falls back to $SY_TOKEN (multi-host mode)
  std::vector<std::string> program;  // PROGRAM ARGS...
};

// One rank this sy-run starts: its global rank and the SY_* variables it gets on top of
// sy-run's own environment.
struct RankLaunch {
  int rank = 0;
  std::vector<std::pair<std::string, std::string>> env;
};

struct LaunchPlan {
  std::vector<std::string> program;
  std::vector<RankLaunch> ranks;  // the ranks of this host, ascending
  int world_size = 0;
  int num_nodes = 0;
  std::string rendezvous;  // "ADDR:PORT"
  std::string job_id;
  bool multi_host = false;
  // One line for the start-up banner: "4 ranks on 2 nodes, rendezvous 127.0.0.1:41234".
  std::string describe() const;
};

// Every variable of the protocol (SY_RANK ... SY_RANK_MAP). Ranks never inherit these
// from sy-run's own environment (a nested sy-run must not leak its job into the next).
const std::vector<std::string>& protocol_variables();

// Checks the options and builds the plan. Local mode binds a socket to pick a free
// port and reads /dev/urandom for the token. Throws InvalidArgument on bad options
// (a rank map that does not fit num_ranks included) and IoError when the system refuses.
LaunchPlan make_launch_plan(const LaunchOptions& options);

// 2*num_bytes lowercase hex digits from /dev/urandom. Throws IoError.
std::string random_hex(int num_bytes);

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
// Throws IoError.
int pick_free_port();

}  // namespace switchyard::run
