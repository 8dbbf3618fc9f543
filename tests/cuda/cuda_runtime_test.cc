// common's CUDA layer: the RAII owners on a GPU (copies round trip, streams and events
// order work), and the errors without one (Unsupported, never a crash).
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "gpu_test_util.h"
#include "switchyard/common/cuda.h"
#include "switchyard/common/error.h"

namespace switchyard {
namespace {

TEST(CudaRuntimeTest, WithoutGpuAllocationThrowsUnsupported) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present; this checks the no-GPU error path";
  EXPECT_THROW(cuda::DeviceBuffer(1024), Unsupported);
  EXPECT_THROW(cuda::set_device(0), Unsupported);
  cuda::DeviceBuffer empty;                            // no allocation: fine everywhere
  EXPECT_EQ(empty.bytes(), 0u);
  EXPECT_EQ(empty.data(), nullptr);
}

TEST(CudaRuntimeTest, DeviceBufferRoundTrip) {
  SY_SKIP_WITHOUT_GPU();
  std::vector<int32_t> in(1 << 16);
  std::iota(in.begin(), in.end(), -1000);
  cuda::DeviceBuffer d(in.size() * sizeof(int32_t));
  d.copy_from_host(in.data(), in.size() * sizeof(int32_t));
  std::vector<int32_t> out(in.size(), 0);
  d.copy_to_host(out.data(), out.size() * sizeof(int32_t));
  EXPECT_EQ(in, out);
  cuda::DeviceBuffer moved = std::move(d);
  EXPECT_EQ(d.data(), nullptr);
  EXPECT_EQ(moved.bytes(), in.size() * sizeof(int32_t));
  EXPECT_THROW(moved.copy_to_host(out.data(), moved.bytes() + 1), InvalidArgument);
}

TEST(CudaRuntimeTest, StreamAndEventsOrderAsyncWork) {
  SY_SKIP_WITHOUT_GPU();
  const size_t n = 1 << 20;
  cuda::PinnedBuffer host(n);
  for (size_t i = 0; i < n; ++i) host.as<uint8_t>()[i] = static_cast<uint8_t>(i * 7);
  cuda::DeviceBuffer d(n);
  cuda::Stream s;
  cuda::Event start, stop;
  start.record(s.get());
  d.fill_zero(s.get());
  stop.record(s.get());
  stop.synchronize();
  EXPECT_TRUE(stop.done());
  EXPECT_GE(stop.elapsed_ms_since(start), 0.0f);
  std::vector<uint8_t> out(n, 1);
  d.copy_to_host(out.data(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], 0) << "byte " << i;
}

TEST(CudaRuntimeTest, ErrorNamesCallAndContext) {
  SY_SKIP_WITHOUT_GPU();
  try {
    cuda::set_device(cuda::device_count());  // one past the last device
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace switchyard
