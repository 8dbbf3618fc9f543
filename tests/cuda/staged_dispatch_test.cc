// Runs staged_dispatch_check (host-staged GPU dispatch/combine vs the CPU Buffer) on 4
// processes over 2 virtual nodes (the two-hop path, UCX between the nodes) and on 2
// processes of one node, all on the one GPU, through sy-run; skips without a GPU.
#include <gtest/gtest.h>

#include <string>

#include "gpu_test_util.h"
#include "switchyard/testing/run_program.h"

namespace switchyard {
namespace {

void run_ranks(int ranks, int nodes) {
  const std::string cmd = std::string(SY_RUN_PATH) + " -n " + std::to_string(ranks) + " --nodes " +
                          std::to_string(nodes) + " --timeout 100 -- " + SY_STAGED_DISPATCH_CHECK_PATH;
  const testing::ProgramRun r = testing::run_program(cmd, 110);
  EXPECT_EQ(r.status, 0) << cmd << "\n" << r.out;
  std::printf("%s", r.out.c_str());
}

TEST(StagedDispatchTest, TwoVirtualNodesMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  run_ranks(4, 2);
}

TEST(StagedDispatchTest, OneNodeMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  run_ranks(2, 1);
}

}  // namespace
}  // namespace switchyard
