// Runs ipc_dispatch_check (GPU dispatch/combine through CUDA IPC vs the CPU Buffer) on 2
// and 3 processes sharing the one GPU, through sy-run; skips without a GPU.
#include <gtest/gtest.h>

#include <string>

#include "gpu_test_util.h"
#include "switchyard/testing/run_program.h"

namespace switchyard {
namespace {

void run_ranks(int ranks) {
  const std::string cmd = std::string(SY_RUN_PATH) + " -n " + std::to_string(ranks) + " --timeout 100 -- " +
                          SY_IPC_DISPATCH_CHECK_PATH;
  const testing::ProgramRun r = testing::run_program(cmd, 110);
  EXPECT_EQ(r.status, 0) << cmd << "\n" << r.out;
  std::printf("%s", r.out.c_str());
}

TEST(IpcDispatchTest, TwoProcessesOnOneGpuMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  run_ranks(2);
}

TEST(IpcDispatchTest, ThreeProcessesOnOneGpuMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  run_ranks(3);
}

}  // namespace
}  // namespace switchyard
