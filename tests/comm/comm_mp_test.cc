// Multi-process tests of the comm library: each starts several processes of comm_rank
// (comm_rank_main.cc, where the checks against naive references live) and checks that
// every rank reported success (or the expected failure).
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <string>

#include "rank_launcher.h"

namespace switchyard::comm::testing {
namespace {

std::string rank_program() { return COMM_RANK_PROGRAM; }

LaunchSpec spec(const std::string& scenario, int n, int nodes = 1) {
  LaunchSpec s;
  s.program = rank_program();
  s.args = {scenario, "7"};
  s.world_size = n;
  s.nodes = nodes;
  s.timeout_s = 60;
  return s;
}

void expect_all_ok(const std::vector<RankResult>& rs) {
  for (size_t i = 0; i < rs.size(); ++i) {
    EXPECT_EQ(rs[i].exit_code, 0) << describe(rs);
    if (rs[i].exit_code != 0) return;
  }
}

class CommOpsTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(CommOpsTest, EveryOpMatchesNaiveReference) {
  auto [n, nodes] = GetParam();
  LaunchSpec s = spec("ops", n, nodes);
  s.tcp = (n % 2) == 0;  // exercise both stores
  s.args[1] = std::to_string(100 + n * 10 + nodes);
  expect_all_ok(launch_ranks(s));
}

INSTANTIATE_TEST_SUITE_P(Ranks, CommOpsTest,
                         ::testing::Values(std::make_tuple(1, 1), std::make_tuple(2, 1), std::make_tuple(3, 1),
                                           std::make_tuple(4, 1), std::make_tuple(2, 2), std::make_tuple(3, 2),
                                           std::make_tuple(4, 2), std::make_tuple(6, 2)),
                         [](const auto& info) {
                           return "Ranks" + std::to_string(std::get<0>(info.param)) + "Nodes" +
                                  std::to_string(std::get<1>(info.param));
                         });

// The flat all_to_all_v between nodes (aggregation off) and the hierarchical all_reduce
// from the smallest size.
TEST(CommunicatorTest, TwoNodesFlatAllToAllV) {
  LaunchSpec s = spec("ops", 4, 2);
  s.env = {{"SWITCHYARD_COMM_HIER_A2AV", "0"}, {"SWITCHYARD_COMM_HIER_A2A_MAX_BYTES", "0"},
           {"SWITCHYARD_COMM_HIER_MIN_BYTES", "0"}};
  expect_all_ok(launch_ranks(s));
}

// With more than one node the algorithm is chosen by size and named in the debug log.
TEST(CommunicatorTest, TwoNodeAlgorithmChoiceIsLogged) {
  LaunchSpec s = spec("ops", 4, 2);
  s.env = {{"SWITCHYARD_LOG_LEVEL", "debug"}, {"SWITCHYARD_LOG_SUBSYS", "comm"}};
  auto rs = launch_ranks(s);
  expect_all_ok(rs);
  const std::string& log = rs[0].output;
  EXPECT_NE(log.find(": hierarchical ("), std::string::npos) << log.substr(0, 2000);
  EXPECT_NE(log.find(": flat ("), std::string::npos) << log.substr(0, 2000);
  EXPECT_NE(log.find("all_to_all_v(send_elements="), std::string::npos) << log.substr(0, 2000);
  EXPECT_NE(log.find("aggregated per node pair"), std::string::npos) << log.substr(0, 2000);
}

// Virtual nodes share the host's CPUs: the wait policy counts every rank on this host.
TEST(CommunicatorTest, WaitPolicyCountsRanksOfEveryVirtualNodeOnTheHost) {
  LaunchSpec s = spec("ops", 4, 2);
  s.env = {{"SWITCHYARD_LOG_LEVEL", "debug"}, {"SWITCHYARD_LOG_SUBSYS", "comm"}};
  auto rs = launch_ranks(s);
  expect_all_ok(rs);
  EXPECT_NE(rs[0].output.find("waiters: 4 ranks on this host"), std::string::npos) << rs[0].output.substr(0, 2000);
}

// Without cross-memory attach (containers without ptrace rights), large messages between
// local ranks travel through the rings in pieces.
TEST(CommunicatorTest, RingPiecesWithoutCrossMemoryAttach) {
  LaunchSpec s = spec("ops", 3);
  s.env = {{"SWITCHYARD_COMM_SHM_CMA", "0"}};
  expect_all_ok(launch_ranks(s));
}

// Small exchanges on the inline path, mixed with the op path and with async forms.
class CommSmallTest : public ::testing::TestWithParam<int> {};

TEST_P(CommSmallTest, InlinePathMatchesNaiveReference) {
  LaunchSpec s = spec("small", GetParam());
  s.args[1] = std::to_string(40 + GetParam());
  expect_all_ok(launch_ranks(s));
}

INSTANTIATE_TEST_SUITE_P(Ranks, CommSmallTest, ::testing::Values(1, 2, 3, 4),
                         [](const auto& info) { return "Ranks" + std::to_string(info.param); });

// One rank with the inline path off: its op-path messages and the others' inline ones match.
TEST(CommunicatorTest, InlineAndOpPathsInteroperate) {
  LaunchSpec s = spec("small", 3);
  s.env_of[1] = {{"SWITCHYARD_COMM_INLINE", "0"}};
  expect_all_ok(launch_ranks(s));
  s = spec("ops", 3);
  s.env_of[2] = {{"SWITCHYARD_COMM_INLINE", "0"}};
  expect_all_ok(launch_ranks(s));
}

// A size that differs between ranks is caught on the inline path too, naming the sender.
TEST(CommunicatorTest, InlineSizeMismatchIsNamed) { expect_all_ok(launch_ranks(spec("mismatch", 3))); }

TEST(CommunicatorTest, SplitAndParallelGroups) { expect_all_ok(launch_ranks(spec("split", 4))); }

TEST(CommunicatorTest, SplitAndParallelGroupsTwoNodes) { expect_all_ok(launch_ranks(spec("split", 4, 2))); }

TEST(CommunicatorTest, AsyncOpProgressesWhileCallerComputes) { expect_all_ok(launch_ranks(spec("async", 2))); }

TEST(CommunicatorTest, WaitTimesOutNamingThePeer) { expect_all_ok(launch_ranks(spec("timeout", 2))); }

TEST(CommunicatorTest, DeadPeerFailsEverySurvivor) {
  auto rs = launch_ranks(spec("dead", 3));
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[2].signal, SIGKILL) << describe(rs);
  EXPECT_EQ(rs[0].exit_code, 0) << describe(rs);
  EXPECT_EQ(rs[1].exit_code, 0) << describe(rs);
}

TEST(CommunicatorTest, DeadPeerOnOtherNodeFailsSurvivors) {
  auto rs = launch_ranks(spec("dead", 4, 2));
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_EQ(rs[3].signal, SIGKILL) << describe(rs);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(rs[r].exit_code, 0) << describe(rs);
}

// A peer that is alive but stopped (SIGSTOP) misses its heartbeats: every survivor gets
// PeerFailure naming it within the heartbeat timeout (1 s here; the wait timeout is 60 s).
TEST(CommunicatorTest, HungPeerIsReportedByHeartbeat) {
  LaunchSpec s = spec("hung", 3);
  s.env = {{"SWITCHYARD_COMM_HEARTBEAT_TIMEOUT_MS", "1000"}};
  s.stopped_rank = 2;
  auto rs = launch_ranks(s);
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[2].signal, SIGKILL) << describe(rs);
  EXPECT_EQ(rs[0].exit_code, 0) << describe(rs);
  EXPECT_EQ(rs[1].exit_code, 0) << describe(rs);
  EXPECT_NE(rs[0].output.find("no heartbeat"), std::string::npos) << describe(rs);
}

// The same across nodes: a stopped rank on the other virtual node is found by the UCX
// heartbeat (its connection stays up), not by the 60 s wait timeout.
TEST(CommunicatorTest, HungPeerOnOtherNodeIsReportedByHeartbeat) {
  LaunchSpec s = spec("hung", 4, 2);
  s.env = {{"SWITCHYARD_COMM_HEARTBEAT_TIMEOUT_MS", "1000"}};
  s.stopped_rank = 3;
  auto rs = launch_ranks(s);
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_EQ(rs[3].signal, SIGKILL) << describe(rs);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(rs[r].exit_code, 0) << describe(rs);
  EXPECT_NE(rs[0].output.find("ucx: rank 3 stopped making progress: no heartbeat"), std::string::npos)
      << describe(rs);
}

// The RMA put path between nodes (docs/comm-ucx.md), forced over tcp here; on InfiniBand it
// is chosen by itself. Messages of at least 1 KiB go by put into the receiver's buffer.
std::map<std::string, std::string> rma_env() {
  return {{"SWITCHYARD_COMM_UCX_RMA", "1"}, {"SWITCHYARD_COMM_UCX_RMA_MIN_BYTES", "1024"}};
}

// Every op against its naive reference with all cross-node traffic on the RMA path, and the
// debug log shows that messages were put (and that the path was chosen for each peer).
TEST(CommunicatorTest, RmaPutPathTwoNodesEveryOp) {
  for (auto [n, flat] : {std::make_pair(4, false), std::make_pair(2, true)}) {
    LaunchSpec s = spec("ops", n, 2);
    s.args[1] = std::to_string(300 + n);
    s.env = rma_env();
    s.env["SWITCHYARD_LOG_LEVEL"] = "debug";
    s.env["SWITCHYARD_LOG_SUBSYS"] = "comm";
    if (flat) s.env["SWITCHYARD_COMM_HIER_A2AV"] = "0";
    auto rs = launch_ranks(s);
    expect_all_ok(rs);
    const std::string& log = rs[0].output;
    EXPECT_NE(log.find("bytes by RMA put (SWITCHYARD_COMM_UCX_RMA=1"), std::string::npos) << log.substr(0, 2000);
    std::smatch m;
    ASSERT_TRUE(std::regex_search(log, m, std::regex("RMA path: ([0-9]+) messages put"))) << log.substr(0, 2000);
    EXPECT_GT(std::stoll(m[1]), 0) << m[0];
    // The last rank puts into rank 0's registered receive buffer, 3 messages into each of
    // the 6 buffers of the scenario (one per round of test_p2p): each buffer's rkey was
    // unpacked once, not per message.
    const std::string& last = rs[n - 1].output;
    ASSERT_TRUE(std::regex_search(last, m, std::regex("([0-9]+) region rkeys unpacked"))) << last.substr(0, 2000);
    EXPECT_EQ(m[1], "6") << m[0];
  }
}

TEST(CommunicatorTest, WaitTimesOutNamingThePeerOnRmaPath) {
  LaunchSpec s = spec("timeout", 2, 2);
  s.env = rma_env();
  expect_all_ok(launch_ranks(s));
}

TEST(CommunicatorTest, DeadPeerOnOtherNodeFailsSurvivorsOnRmaPath) {
  LaunchSpec s = spec("dead", 4, 2);
  s.env = rma_env();
  auto rs = launch_ranks(s);
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_EQ(rs[3].signal, SIGKILL) << describe(rs);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(rs[r].exit_code, 0) << describe(rs);
}

TEST(CommunicatorTest, HungPeerOnOtherNodeIsReportedByHeartbeatOnRmaPath) {
  LaunchSpec s = spec("hung", 4, 2);
  s.env = rma_env();
  s.env["SWITCHYARD_COMM_HEARTBEAT_TIMEOUT_MS"] = "1000";
  s.stopped_rank = 3;
  auto rs = launch_ranks(s);
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_EQ(rs[3].signal, SIGKILL) << describe(rs);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(rs[r].exit_code, 0) << describe(rs);
  EXPECT_NE(rs[0].output.find("ucx: rank 3 stopped making progress: no heartbeat"), std::string::npos)
      << describe(rs);
}

TEST(CommunicatorTest, AbortFailsPeersWithoutHanging) { expect_all_ok(launch_ranks(spec("abort", 3))); }

TEST(CommunicatorTest, MissingRankIsNamedAfterTimeout) {
  LaunchSpec s = spec("arrive", 3);
  s.ranks_to_start = {0, 1};
  s.env = {{"COMM_TEST_TIMEOUT_MS", "1500"}, {"COMM_TEST_EXPECT", "rank 2 did not arrive"}};
  expect_all_ok(launch_ranks(s));
}

TEST(CommunicatorTest, BadTokenIsRefusedAndLogged) {
  LaunchSpec s = spec("badtoken", 2);
  s.env = {{"COMM_TEST_TIMEOUT_MS", "1500"}};
  s.env_of[1] = {{"SY_TOKEN", "wrong-token"}};
  auto rs = launch_ranks(s);
  expect_all_ok(rs);
  EXPECT_NE(rs[0].output.find("refused connection"), std::string::npos) << describe(rs);
}

TEST(CommunicatorTest, BadArgumentsGiveClearErrors) {
  LaunchSpec s = spec("badargs", 3);
  s.env = {{"SWITCHYARD_COMM_CHECK_ARGS", "1"}};
  expect_all_ok(launch_ranks(s));
}

}  // namespace
}  // namespace switchyard::comm::testing
