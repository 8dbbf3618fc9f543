// NcclCommunicator at world size 1 (NCCL refuses two ranks on one GPU, and the GPU machine
// has one), checked against the CPU Communicator of the same world size: every collective
// gives the same bytes. Bootstrap through a memory store, a TCP store and a host
// Communicator. Without a GPU: create throws Unsupported. The device-API all_to_all_v
// (NCCL >= 2.28) is checked at world size 1 too (an LSA team of one: the kernel, the window
// and the barriers run, the peer stores stay on the one GPU) against the host-API
// all_to_all_v and the CPU Communicator, byte for byte, also read in place from the window.
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
  comm::NcclOptions options;
  options.device = 0;
  options.key_prefix = "job1";
  options.timeout = std::chrono::milliseconds(10000);
  auto a = comm::NcclCommunicator::create(*store, 0, 1, options);
  EXPECT_EQ(a->rank(), 0);
  a->barrier();
  auto host = comm::Communicator::init(comm::LaunchEnv{});
  auto b = comm::NcclCommunicator::create(*host);
  EXPECT_EQ(b->device(), 0);
  b->barrier();
}

TEST(NcclCommunicatorTest, DeviceApiNotRequestedThrowsUnsupported) {
  SY_SKIP_WITHOUT_GPU();
  auto store = comm::make_memory_store();
  auto nccl = comm::NcclCommunicator::create(*store, 0, 1);
  EXPECT_FALSE(nccl->has_device_api());
  EXPECT_NE(nccl->device_api_reason().find("device_window_bytes"), std::string::npos) << nccl->device_api_reason();
  EXPECT_EQ(nccl->device_slot_bytes(), 0u);
  cuda::DeviceBuffer buf(64);
  const size_t count = 4, displ = 0;
  EXPECT_THROW(nccl->all_to_all_v_device(buf.data(), &count, &displ, buf.data(), &count, &displ, comm::DataType::kInt32),
               Unsupported);
  EXPECT_THROW(nccl->device_recv_slot(0), Unsupported);
}

TEST(NcclCommunicatorTest, DeviceApiRejectsBadCtaCount) {
  SY_SKIP_WITHOUT_GPU();
  auto store = comm::make_memory_store();
  comm::NcclOptions options;
  options.device_window_bytes = 1 << 20;
  options.device_ctas = 0;
  EXPECT_THROW(comm::NcclCommunicator::create(*store, 0, 1, options), InvalidArgument);
}

// One all_to_all_v of the check below: `count` elements of `type` from send offset `sd` to
// recv offset `rd`, random bytes in, a sentinel pattern around the block.
struct A2aCase {
  comm::DataType type;
  size_t count, sd, rd;
};

TEST(NcclCommunicatorTest, DeviceAllToAllVMatchesHostApiAndCpuCommunicator) {
  SY_SKIP_WITHOUT_GPU();
  const int version = comm::NcclCommunicator::runtime_version();
  const int built = comm::NcclCommunicator::build_version();
  std::printf("NCCL runtime version %d, headers %d\n", version, built);
  auto cpu = comm::Communicator::init(comm::LaunchEnv{});
  auto store = comm::make_memory_store();
  comm::NcclOptions options;
  options.device_window_bytes = size_t(8) << 20;
  options.device_ctas = 12;
  auto nccl = comm::NcclCommunicator::create(*store, 0, 1, options);
  if (version < 22800 || version != built) {
    EXPECT_FALSE(nccl->has_device_api());
    GTEST_SKIP() << "NCCL " << version << " at run time, " << built
                 << " at build time: no device API: " << nccl->device_api_reason();
  }
  if (!nccl->has_device_api() && nccl->device_api_reason().find("symmetric memory") != std::string::npos)
    GTEST_SKIP() << "NCCL has no symmetric memory on this machine: " << nccl->device_api_reason();
  ASSERT_TRUE(nccl->has_device_api()) << nccl->device_api_reason();
  ASSERT_EQ(nccl->device_slot_bytes(), options.device_window_bytes);  // one rank: one slot

  // Zero, tiny, odd (byte and 4-byte copy paths), a block every CTA shares, one that fills
  // the slot exactly; misaligned offsets on either side.
  std::mt19937 g(11);
  std::vector<A2aCase> cases = {
      {comm::DataType::kFloat32, 0, 0, 0},        {comm::DataType::kFloat32, 1, 3, 5},
      {comm::DataType::kInt8, 4097, 1, 3},        {comm::DataType::kBfloat16, 12345, 7, 1},
      {comm::DataType::kFloat32, 1000, 17, 33},   {comm::DataType::kInt64, 0, 9, 2},
      {comm::DataType::kFloat64, 300001, 0, 0},   {comm::DataType::kUint8, (size_t(8) << 20), 0, 0},
      {comm::DataType::kFloat8E4M3, 99991, 0, 8}, {comm::DataType::kInt32, 1, 0, 0}};
  for (int i = 0; i < 6; ++i)  // random uneven counts and offsets, zero included
    cases.push_back({comm::DataType::kFloat32, std::uniform_int_distribution<size_t>(0, 3)(g) == 0
                                                   ? 0
                                                   : std::uniform_int_distribution<size_t>(1, 200000)(g),
                     std::uniform_int_distribution<size_t>(0, 64)(g), std::uniform_int_distribution<size_t>(0, 64)(g)});

  // Inputs, the CPU reference, and the device buffers of every case first; then all device
  // calls back to back on one stream (the window is reused without a host sync between).
  struct Buffers {
    std::vector<uint8_t> send, want;
    cuda::DeviceBuffer d_send, d_host_api, d_device_api;
  };
  std::vector<Buffers> bufs;
  for (const A2aCase& c : cases) {
    const size_t eb = comm::dtype_size(c.type);
    Buffers b;
    b.send.resize((c.sd + c.count) * eb);
    for (uint8_t& x : b.send) x = static_cast<uint8_t>(g());
    const size_t recv_bytes = (c.rd + c.count + 3) * eb;  // a tail the exchange must not touch
    std::vector<uint8_t> sentinel(recv_bytes);
    for (size_t i = 0; i < recv_bytes; ++i) sentinel[i] = static_cast<uint8_t>(0xA5 ^ i);
    b.want = sentinel;
    cpu->all_to_all_v(b.send.data(), &c.count, &c.sd, b.want.data(), &c.count, &c.rd, c.type);
    b.d_send = testing::to_device(b.send);
    b.d_host_api = testing::to_device(sentinel);
    b.d_device_api = testing::to_device(sentinel);
    bufs.push_back(std::move(b));
  }
  cuda::Stream stream;
  for (size_t k = 0; k < cases.size(); ++k) {
    const A2aCase& c = cases[k];
    nccl->all_to_all_v(bufs[k].d_send.data(), &c.count, &c.sd, bufs[k].d_host_api.data(), &c.count, &c.rd, c.type,
                       stream.get());
    nccl->all_to_all_v_device(bufs[k].d_send.data(), &c.count, &c.sd, bufs[k].d_device_api.data(), &c.count, &c.rd,
                              c.type, stream.get());
  }
  stream.synchronize();
  nccl->synchronize();
  for (size_t k = 0; k < cases.size(); ++k) {
    const A2aCase& c = cases[k];
    const size_t n = bufs[k].want.size();
    const size_t eb = comm::dtype_size(c.type);
    const std::vector<uint8_t> host_api = testing::to_host<uint8_t>(bufs[k].d_host_api, n);
    const std::vector<uint8_t> device_api = testing::to_host<uint8_t>(bufs[k].d_device_api, n);
    EXPECT_EQ(testing::first_byte_difference(host_api.data(), bufs[k].want.data(), n, eb), "")
        << "host API, case " << k << " (count " << c.count << ", sd " << c.sd << ", rd " << c.rd << ")";
    EXPECT_EQ(testing::first_byte_difference(device_api.data(), bufs[k].want.data(), n, eb), "")
        << "device API, case " << k << " (count " << c.count << ", sd " << c.sd << ", rd " << c.rd << ")";
  }

  // In place: recv == nullptr leaves the block in this rank's slot; read it there (copied
  // out by the host API on the same stream, so before any later device call).
  {
    const size_t k = 3;  // bf16, 12345 elements from send offset 7
    const A2aCase& c = cases[k];
    const size_t eb = comm::dtype_size(c.type), zero = 0;
    cuda::DeviceBuffer d_out(c.count * eb);
    nccl->all_to_all_v_device(bufs[k].d_send.data(), &c.count, &c.sd, nullptr, &c.count, &c.rd, c.type, stream.get());
    nccl->all_to_all_v(nccl->device_recv_slot(0), &c.count, &zero, d_out.data(), &c.count, &zero, c.type,
                       stream.get());
    stream.synchronize();
    const std::vector<uint8_t> got = testing::to_host<uint8_t>(d_out, c.count * eb);
    EXPECT_EQ(testing::first_byte_difference(got.data(), bufs[k].want.data() + c.rd * eb, c.count * eb, eb), "")
        << "device API in place (recv = nullptr, read through device_recv_slot)";
  }
  EXPECT_THROW(nccl->device_recv_slot(1), InvalidArgument);

  // A block one element over the slot is refused before anything is enqueued.
  const size_t over = nccl->device_slot_bytes() / 4 + 1, zero = 0;
  EXPECT_THROW(nccl->all_to_all_v_device(bufs[0].d_send.data(), &over, &zero, bufs[0].d_device_api.data(), &over,
                                         &zero, comm::DataType::kFloat32),
               InvalidArgument);
}

}  // namespace
}  // namespace switchyard
