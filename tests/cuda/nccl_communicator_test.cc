// NcclCommunicator at world size 1 (NCCL refuses two ranks on one GPU, and the GPU machine
// has one), checked against the CPU Communicator of the same world size: every collective
// gives the same bytes. Bootstrap through a memory store, a TCP store and a host
// Communicator. Without a GPU: create throws Unsupported.
#include <gtest/gtest.h>

#include <unistd.h>

#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "switchyard/comm/communicator.h"
#include "switchyard/comm/nccl_communicator.h"
#include "switchyard/comm/store.h"
#include "switchyard/common/error.h"

namespace switchyard {
namespace {

using testing::to_device;
using testing::to_host;

TEST(NcclCommunicatorTest, WithoutGpuCreateThrowsUnsupported) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present; this checks the no-GPU error path";
  auto store = comm::make_memory_store();
  EXPECT_THROW(comm::NcclCommunicator::create(*store, 0, 1), Unsupported);
}

TEST(NcclCommunicatorTest, RejectsBadRank) {
  auto store = comm::make_memory_store();
  if (!comm::NcclCommunicator::available()) GTEST_SKIP() << "this build has no NCCL";
  EXPECT_THROW(comm::NcclCommunicator::create(*store, 2, 2), InvalidArgument);
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(g);
  return v;
}

TEST(NcclCommunicatorTest, CollectivesMatchCpuCommunicatorAtWorldSizeOne) {
  SY_SKIP_WITHOUT_GPU();
  std::printf("NCCL runtime version %d\n", comm::NcclCommunicator::runtime_version());
  auto cpu = comm::Communicator::init(comm::LaunchEnv{});
  auto store = comm::make_memory_store();
  auto nccl = comm::NcclCommunicator::create(*store, 0, 1);
  ASSERT_EQ(nccl->size(), 1);
  const size_t n = 4099;
  const std::vector<float> in = random_floats(n, 7);
  auto d_in = to_device(in);
  cuda::DeviceBuffer d_out(n * sizeof(float));
  std::vector<float> want(n);

  cpu->all_reduce(in.data(), want.data(), n, comm::DataType::kFloat32, comm::ReduceOp::kSum);
  nccl->all_reduce(d_in.data(), d_out.data(), n, comm::DataType::kFloat32, comm::ReduceOp::kSum);
  nccl->synchronize();
  EXPECT_EQ(to_host<float>(d_out, n), want) << "all_reduce";

  cpu->all_gather(in.data(), want.data(), n, comm::DataType::kFloat32);
  nccl->all_gather(d_in.data(), d_out.data(), n, comm::DataType::kFloat32);
  nccl->synchronize();
  EXPECT_EQ(to_host<float>(d_out, n), want) << "all_gather";

  cpu->reduce_scatter(in.data(), want.data(), n, comm::DataType::kFloat32, comm::ReduceOp::kMax);
  nccl->reduce_scatter(d_in.data(), d_out.data(), n, comm::DataType::kFloat32, comm::ReduceOp::kMax);
  nccl->synchronize();
  EXPECT_EQ(to_host<float>(d_out, n), want) << "reduce_scatter";

  // all_to_all_v with a displaced block on both sides.
  const size_t count = 1000, sd = 17, rd = 33;
  std::vector<float> cpu_recv(rd + count, -1.0f);
  cpu->all_to_all_v(in.data(), &count, &sd, cpu_recv.data(), &count, &rd, comm::DataType::kFloat32);
  cuda::DeviceBuffer d_recv((rd + count) * sizeof(float));
  d_recv.copy_from_host(std::vector<float>(rd + count, -1.0f).data(), (rd + count) * sizeof(float));
  nccl->all_to_all_v(d_in.data(), &count, &sd, d_recv.data(), &count, &rd, comm::DataType::kFloat32);
  nccl->synchronize();
  EXPECT_EQ(to_host<float>(d_recv, rd + count), cpu_recv) << "all_to_all_v";

  std::vector<float> b = in;
  cpu->broadcast(b.data(), n, comm::DataType::kFloat32, 0);
  nccl->broadcast(d_in.data(), n, comm::DataType::kFloat32, 0);
  nccl->barrier();
  EXPECT_EQ(to_host<float>(d_in, n), b) << "broadcast";

  EXPECT_THROW(nccl->broadcast(d_in.data(), n, comm::DataType::kFloat32, 1), InvalidArgument);
}

TEST(NcclCommunicatorTest, BootstrapsThroughTcpStoreAndHostCommunicator) {
  SY_SKIP_WITHOUT_GPU();
  comm::TcpStoreOptions o;
  o.is_server = true;
  o.port = 20000 + static_cast<int>(getpid() % 20000);  // a free port is likely; the test fails loudly if not
  o.token = "nccl-test";
  auto store = comm::make_tcp_store(o);
  auto a = comm::NcclCommunicator::create(*store, 0, 1, comm::NcclOptions{0, "job1", std::chrono::milliseconds(10000)});
  EXPECT_EQ(a->rank(), 0);
  a->barrier();
  auto host = comm::Communicator::init(comm::LaunchEnv{});
  auto b = comm::NcclCommunicator::create(*host);
  EXPECT_EQ(b->device(), 0);
  b->barrier();
}

}  // namespace
}  // namespace switchyard
