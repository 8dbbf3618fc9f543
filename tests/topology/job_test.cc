// sy-topo under sy-run: every rank reports its rank, node, local rank and rail.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "switchyard/topology/host_topology.h"
#include "switchyard/testing/run_program.h"

namespace {

using ::switchyard::testing::ProgramRun;
ProgramRun run(const std::string& cmd) { return ::switchyard::testing::run_program(cmd, 45); }

// The JSON object on each output line (after sy-run's rank prefix), keyed by its "rank".
std::map<int, nlohmann::json> rank_lines(const std::string& out) {
  std::map<int, nlohmann::json> by_rank;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    size_t brace = line.find('{');
    if (brace == std::string::npos) continue;
    auto j = nlohmann::json::parse(line.substr(brace));
    by_rank[j["rank"].get<int>()] = j;
  }
  return by_rank;
}

TEST(SyTopoJobTest, FourRanksOnTwoNodes) {
  ProgramRun r = run(std::string(SY_RUN_BIN) + " -n 4 --nodes 2 --timeout 30 -- " + SY_TOPO_BIN + " --json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto ranks = rank_lines(r.out);
  ASSERT_EQ(ranks.size(), 4u) << r.out;
  const int gpus = switchyard::topology::HostTopology::discover_local().num_gpus();
  for (int rank = 0; rank < 4; ++rank) {
    const auto& j = ranks[rank];
    EXPECT_EQ(j["world_size"], 4);
    EXPECT_EQ(j["num_nodes"], 2);
    EXPECT_EQ(j["node"], rank / 2);
    EXPECT_EQ(j["local_rank"], rank % 2);
    if (gpus == 0) {  // no GPU, so no NIC: the rail is the local rank
      EXPECT_EQ(j["rail"], rank % 2);
    }
    EXPECT_EQ(j["rail_peers"], nlohmann::json::array({rank % 2, rank % 2 + 2}));
    // Each virtual node is this machine: local rank l on GPU l % num_gpus, if any.
    EXPECT_EQ(j["gpu"], gpus ? (rank % 2) % gpus : -1);
  }
}

TEST(SyTopoJobTest, RankMapGivesGpusAndNics) {
  ProgramRun r = run(std::string(SY_RUN_BIN) + " -n 4 --rank-map " + SY_TOPO_DATA +
                     "/cluster-2x2-pcie.json --timeout 30 -- " + SY_TOPO_BIN + " --json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto ranks = rank_lines(r.out);
  ASSERT_EQ(ranks.size(), 4u) << r.out;
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(ranks[rank]["node"], rank / 2);
    EXPECT_EQ(ranks[rank]["gpu"], 2 * (rank % 2));  // the file puts local ranks on GPUs 0 and 2
    EXPECT_EQ(ranks[rank]["nic"], "mlx5_" + std::to_string(rank % 2));
  }
}

}  // namespace
