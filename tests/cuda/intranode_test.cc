// IntranodeBuffer in one process (world size 1: every token goes to this rank through its
// own window) against the CPU Buffer, bit for bit (dispatch_compare.h); and its argument
// checks. The multi-process form is ipc_dispatch_test.cc. Without a GPU: Unsupported.
#include <gtest/gtest.h>

#include <sstream>

#include "dispatch_compare.h"
#include "gpu_test_util.h"
#include "switchyard/common/error.h"

namespace switchyard {
namespace {

dispatch::gpu::IntranodeOptions small_options() {
  dispatch::gpu::IntranodeOptions o;
  o.num_experts = 8;
  o.hidden = 256;
  o.max_tokens_per_rank = 16;
  return o;
}

TEST(IntranodeBufferTest, WithoutGpuThrowsUnsupported) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present; this checks the no-GPU error path";
  auto comm = comm::Communicator::init(comm::LaunchEnv{});
  EXPECT_THROW(dispatch::gpu::IntranodeBuffer(comm, small_options()), Unsupported);
}

TEST(IntranodeBufferTest, WorldSizeOneMatchesCpuBuffer) {
  SY_SKIP_WITHOUT_GPU();
  auto comm = comm::Communicator::init(comm::LaunchEnv{});
  std::ostringstream log;
  EXPECT_EQ(testing::compare_ipc_dispatch_with_cpu(comm, log, 200), 0) << log.str();
  EXPECT_EQ(testing::compare_ipc_dispatch_with_cpu(comm, log, 129), 0) << log.str();
  std::printf("%s", log.str().c_str());
}

TEST(IntranodeBufferTest, RejectsBadArguments) {
  SY_SKIP_WITHOUT_GPU();
  auto comm = comm::Communicator::init(comm::LaunchEnv{});
  auto bad = small_options();
  bad.num_experts = 0;
  EXPECT_THROW(dispatch::gpu::IntranodeBuffer(comm, bad), InvalidArgument);
  bad = small_options();
  bad.max_top_k = 33;  // a warp holds one slot per lane
  EXPECT_THROW(dispatch::gpu::IntranodeBuffer(comm, bad), InvalidArgument);
  dispatch::gpu::IntranodeBuffer buf(comm, small_options());
  dispatch::gpu::DeviceDispatchArgs a;
  a.num_tokens = 17;  // above max_tokens_per_rank
  a.top_k = 2;
  EXPECT_THROW(buf.dispatch(a), InvalidArgument);
  a.num_tokens = 4;
  a.top_k = 9;  // above max_top_k
  EXPECT_THROW(buf.dispatch(a), InvalidArgument);
  dispatch::gpu::DeviceCombineArgs c;  // no handle
  EXPECT_THROW(buf.combine(c), InvalidArgument);
}

}  // namespace
}  // namespace switchyard
