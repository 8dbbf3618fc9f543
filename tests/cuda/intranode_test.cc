// IntranodeBuffer in one process (world size 1: every token goes to this rank through its
// own window) against the CPU Buffer, bit for bit (dispatch_compare.h); and its argument
// checks. The multi-process form is ipc_dispatch_test.cc. Without a GPU: Unsupported.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

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
  EXPECT_EQ(testing::compare_ipc_dispatch_with_cpu(comm, log, 200, 32), 0) << log.str();
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

// The SM budget: the default leaves most SMs free, <= 0 means every SM, larger requests
// are clamped to the device's SM count.
TEST(IntranodeBufferTest, SmBudgetDefaultsAndClamps) {
  SY_SKIP_WITHOUT_GPU();
  auto comm = comm::Communicator::init(comm::LaunchEnv{});
  int sms = 0;
  {
    dispatch::gpu::IntranodeOptions o = small_options();
    o.num_sms = 1 << 20;  // clamped to the device
    sms = dispatch::gpu::IntranodeBuffer(comm, o).num_sms();
  }
  EXPECT_GT(sms, 0);
  dispatch::gpu::IntranodeBuffer def(comm, small_options());
  EXPECT_EQ(def.num_sms(), std::min(dispatch::gpu::IntranodeOptions::kDefaultNumSms, sms));
  auto all = small_options();
  all.num_sms = 0;
  EXPECT_EQ(dispatch::gpu::IntranodeBuffer(comm, all).num_sms(), sms);
}

// A bad expert index is found after the layout kernel: the call throws InvalidArgument
// naming the entry, and the buffer stays usable (the next valid dispatch delivers every
// token that selects an expert: all of them at world size 1).
TEST(IntranodeBufferTest, BadExpertThrowsAndBufferStaysUsable) {
  SY_SKIP_WITHOUT_GPU();
  auto comm = comm::Communicator::init(comm::LaunchEnv{});
  dispatch::gpu::IntranodeBuffer buf(comm, small_options());  // 8 experts, hidden 256
  const std::vector<uint16_t> x(4 * 256, 0x3f80);                // BF16 1.0
  auto d_x = testing::to_device(x);
  const std::vector<int64_t> bad = {0, 1, 2, 3, 4, 99, 6, -1};
  auto d_bad = testing::to_device(bad);
  dispatch::gpu::DeviceDispatchArgs a;
  a.x = d_x.data();
  a.topk_idx = d_bad.as<int64_t>();
  a.num_tokens = 4;
  a.top_k = 2;
  try {
    buf.dispatch(a);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("topk_idx[2][1]"), std::string::npos) << e.what();
  }
  const std::vector<int64_t> good = {0, 1, 2, 3, 4, -1, -1, -1};  // token 3 selects nothing
  auto d_good = testing::to_device(good);
  a.topk_idx = d_good.as<int64_t>();
  const auto r = buf.dispatch(a);
  EXPECT_EQ(r.num_recv_tokens, 3);
  EXPECT_EQ(r.expert_offsets.back(), 5);
}

// Last in the file: LowLatencyBuffer has not run on a GPU yet, and a fault there would spoil
// the CUDA context for the tests after it.
TEST(LowLatencyBufferTest, WorldSizeOneMatchesCpuLowLatency) {
  SY_SKIP_WITHOUT_GPU();
  auto comm = comm::Communicator::init(comm::LaunchEnv{});
  std::ostringstream log;
  EXPECT_EQ(testing::compare_low_latency_with_cpu(comm, log), 0) << log.str();
  std::printf("%s", log.str().c_str());
}

TEST(LowLatencyBufferTest, WithoutGpuThrowsUnsupported) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present; this checks the no-GPU error path";
  auto comm = comm::Communicator::init(comm::LaunchEnv{});
  dispatch::gpu::LowLatencyOptions o;
  o.num_experts = 8;
  o.hidden = 256;
  o.max_tokens = 8;
  EXPECT_THROW(dispatch::gpu::LowLatencyBuffer(comm, o), Unsupported);
}

}  // namespace
}  // namespace switchyard
