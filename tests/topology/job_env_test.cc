// JobEnv: the SY_ variables sy-run sets, parsed and checked against the rank map.
#include "switchyard/topology/job_env.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>

#include "switchyard/common/error.h"

namespace switchyard::topology {
namespace {

// Sets the job variables for one test and clears them afterwards.
class JobEnvTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const char* v : {"SY_RANK", "SY_WORLD_SIZE", "SY_LOCAL_RANK", "SY_NODE", "SY_NUM_NODES", "SY_RANK_MAP"})
      unsetenv(v);
  }
  void set(int rank, int size, int local, int node, int nodes) {
    setenv("SY_RANK", std::to_string(rank).c_str(), 1);
    setenv("SY_WORLD_SIZE", std::to_string(size).c_str(), 1);
    setenv("SY_LOCAL_RANK", std::to_string(local).c_str(), 1);
    setenv("SY_NODE", std::to_string(node).c_str(), 1);
    setenv("SY_NUM_NODES", std::to_string(nodes).c_str(), 1);
  }
  static std::string message_of(const std::function<void()>& fn) {
    try {
      fn();
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "no error";
  }
};

TEST_F(JobEnvTest, AbsentOutsideAJob) {
  TearDown();
  EXPECT_FALSE(JobEnv::from_environment().has_value());
}

TEST_F(JobEnvTest, ContiguousJob) {
  set(5, 8, 1, 1, 2);
  auto e = JobEnv::from_environment();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->rank, 5);
  Cluster c = e->cluster();
  EXPECT_EQ(c.num_ranks(), 8);
  EXPECT_EQ(c.node_of(5), 1);
  EXPECT_EQ(c.rail_peers(5), std::vector<int>({1, 5}));
  // Without a rank map every virtual node is this machine.
  ASSERT_NE(c.host(1), nullptr);
  EXPECT_EQ(c.host(1)->source(), "local");
  int gpus = c.host(1)->num_gpus();
  EXPECT_EQ(c.gpu_of(5), gpus ? 1 % gpus : -1);
  EXPECT_EQ(c.link_class(4, 5), gpus > 1 ? c.host(1)->gpu_link_class(0, 1) : LinkClass::kSameNode);
  EXPECT_EQ(c.link_class(1, 5), LinkClass::kNetwork);
}

TEST_F(JobEnvTest, RankMapFromTheEnvironment) {
  set(3, 4, 1, 1, 2);
  setenv("SY_RANK_MAP", (std::string(SY_TOPO_DATA) + "/cluster-2x2-pcie.json").c_str(), 1);
  Cluster c = JobEnv::from_environment()->cluster();
  EXPECT_EQ(c.gpu_of(3), 2);
  EXPECT_EQ(c.nic_name(3), "mlx5_1");
}

TEST_F(JobEnvTest, InconsistentOrMalformedVariablesAreNamed) {
  set(3, 4, 0, 1, 2);
  EXPECT_NE(message_of([] { JobEnv::from_environment()->cluster(); }).find("rank 3 has SY_LOCAL_RANK=0"),
            std::string::npos);
  set(3, 4, 1, 0, 2);
  EXPECT_NE(message_of([] { JobEnv::from_environment()->cluster(); }).find("rank 3 has SY_NODE=0"), std::string::npos);
  set(1, 4, 1, 0, 1);
  setenv("SY_RANK_MAP", (std::string(SY_TOPO_DATA) + "/cluster-2x8-h800.json").c_str(), 1);
  EXPECT_NE(message_of([] { JobEnv::from_environment()->cluster(); }).find("describes 16 ranks but the job has 4"),
            std::string::npos);
  unsetenv("SY_RANK_MAP");
  setenv("SY_RANK", "x1", 1);
  EXPECT_NE(message_of([] { JobEnv::from_environment(); }).find("SY_RANK='x1' is not an integer"), std::string::npos);
  setenv("SY_RANK", "4", 1);
  EXPECT_NE(message_of([] { JobEnv::from_environment(); }).find("SY_RANK=4 out of range [0, 3]"), std::string::npos);
  unsetenv("SY_WORLD_SIZE");
  EXPECT_NE(message_of([] { JobEnv::from_environment(); }).find("SY_WORLD_SIZE is not set"), std::string::npos);
}

}  // namespace
}  // namespace switchyard::topology
