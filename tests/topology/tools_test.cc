// sy-topo and sy-info run as programs; their --json output is parsed and checked against the
// library and the shipped host layouts.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "switchyard/topology/host_topology.h"
#include "switchyard/testing/run_program.h"

namespace switchyard::topology {
namespace {

using ::switchyard::testing::ProgramRun;
ProgramRun run(const std::string& cmd) { return ::switchyard::testing::run_program(cmd, 30); }

const std::string kTopo = SY_TOPO_BIN;
const std::string kInfo = SY_INFO_BIN;
std::string data(const std::string& name) {
  return std::string(SY_TOPO_DATA) + "/" + name;
}

TEST(SyTopoTest, XmlJsonDescribesTheHost) {
  ProgramRun r = run(kTopo + " --json --xml " + data("h800x8-4nic.xml"));
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["gpus"].size(), 8u);
  EXPECT_EQ(j["nics"].size(), 4u);
  EXPECT_EQ(j["packages"], 2);
  for (int g = 0; g < 8; ++g) {
    EXPECT_EQ(j["gpus"][g]["nic_name"], "mlx5_" + std::to_string(g / 2));
    EXPECT_EQ(j["gpus"][g]["numa"], g / 4);
  }
}

TEST(SyTopoTest, ReadableSummaryOfLocalMachine) {
  ProgramRun r = run(kTopo);
  ASSERT_EQ(r.status, 0) << r.out;
  HostTopology h = HostTopology::discover_local();
  EXPECT_NE(r.out.find("host " + h.hostname() + " (local)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(std::to_string(h.num_pus()) + " PU"), std::string::npos) << r.out;
  ProgramRun j = run(kTopo + " --json");
  ASSERT_EQ(j.status, 0) << j.out;
  EXPECT_EQ(nlohmann::json::parse(j.out)["gpus"].size(), static_cast<size_t>(h.num_gpus()));
}

TEST(SyTopoTest, ClusterJsonListsRanksAndRails) {
  ProgramRun r = run(kTopo + " --json --cluster " + data("cluster-2x8-h800.json"));
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["num_ranks"], 16);
  EXPECT_EQ(j["num_nodes"], 2);
  for (int rank = 0; rank < 16; ++rank) {
    const auto& e = j["ranks"][rank];
    EXPECT_EQ(e["node"], rank / 8);
    EXPECT_EQ(e["rail"], rank % 8);
    EXPECT_EQ(e["nic"], "mlx5_" + std::to_string(rank % 8));
    EXPECT_EQ(e["rail_peers"], nlohmann::json::array({rank % 8, rank % 8 + 8}));
  }
}

TEST(SyTopoTest, RankReportFromJobEnvironment) {
  std::string env = "SY_RANK=3 SY_WORLD_SIZE=4 SY_LOCAL_RANK=1 SY_NODE=1 SY_NUM_NODES=2 SY_RANK_MAP=" +
                    data("cluster-2x2-pcie.json") + " ";
  ProgramRun r = run("env " + env + kTopo + " --json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["rank"], 3);
  EXPECT_EQ(j["node"], 1);
  EXPECT_EQ(j["local_rank"], 1);
  EXPECT_EQ(j["gpu"], 2);
  EXPECT_EQ(j["nic"], "mlx5_1");
  EXPECT_EQ(j["rail"], 1);
  ProgramRun text = run("env " + env + kTopo);
  EXPECT_NE(text.out.find("rank 3/4: node 1 (node1) local_rank 1/2 gpu 2 nic mlx5_1 rail 1"), std::string::npos)
      << text.out;
}

TEST(SyTopoTest, BadInputExitsWithAClearMessage) {
  ProgramRun r = run(kTopo + " --xml /nonexistent.xml");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("sy-topo: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("/nonexistent.xml': cannot open"), std::string::npos) << r.out;
  r = run("env SY_RANK=0 SY_WORLD_SIZE=3 SY_NUM_NODES=1 SY_RANK_MAP=" + data("cluster-2x2-pcie.json") + " " + kTopo);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("describes 4 ranks but the job has 3"), std::string::npos) << r.out;
  r = run(kTopo + " --xml a.xml --cluster b.json");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("exclusive"), std::string::npos) << r.out;
}

TEST(SyInfoTest, VersionAndCuda) {
  ProgramRun r = run(kInfo + " --json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["version"].is_string());
  EXPECT_FALSE(j["version"].get<std::string>().empty());
  EXPECT_TRUE(j["cuda_built"].is_boolean());
  ProgramRun text = run(kInfo);
  EXPECT_NE(text.out.find("switchyard " + j["version"].get<std::string>()), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(j["cuda_built"].get<bool>() ? "cuda: built" : "cuda: not built"), std::string::npos)
      << text.out;
}

TEST(SyInfoTest, ConfigListsKnobsWithCurrentValues) {
  ProgramRun r = run("env SWITCHYARD_TOPO_NVML=0 " + kInfo + " --config --json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto knobs = nlohmann::json::parse(r.out)["knobs"];
  ASSERT_FALSE(knobs.empty());
  bool found = false;
  for (const auto& k : knobs) {
    for (const char* field : {"name", "env", "type", "default", "units", "current", "help"})
      EXPECT_TRUE(k.contains(field)) << k.dump();
    EXPECT_EQ(k["env"], "SWITCHYARD_" + k["name"].get<std::string>());
    EXPECT_FALSE(k["help"].get<std::string>().empty()) << k.dump();
    if (k["name"] == "TOPO_NVML") {
      found = true;
      EXPECT_EQ(k["type"], "bool");
      EXPECT_EQ(k["default"], "true");
      EXPECT_EQ(k["current"], "false");
    }
  }
  EXPECT_TRUE(found) << r.out;
  ProgramRun text = run(kInfo + " --config");
  EXPECT_NE(text.out.find("SWITCHYARD_TOPO_NVML = true"), std::string::npos) << text.out;
}

}  // namespace
}  // namespace switchyard::topology
