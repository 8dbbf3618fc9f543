// Single-process tests of the comm library: launch environment precedence, the stores,
// and a one-rank communicator.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "rank_launcher.h"
#include "switchyard/comm/communicator.h"
#include "switchyard/comm/launch_env.h"
#include "switchyard/comm/store.h"
#include "switchyard/common/error.h"

namespace switchyard::comm {
namespace {

using Vars = std::map<std::string, std::string>;
using namespace std::chrono_literals;

TEST(LaunchEnvTest, SyVariablesWinOverOtherLaunchers) {
  auto e = LaunchEnv::detect(Vars{{"SY_RANK", "3"}, {"SY_WORLD_SIZE", "8"}, {"SY_LOCAL_RANK", "1"},
                                  {"SY_LOCAL_SIZE", "2"}, {"SY_NODE", "n1"}, {"SY_RENDEZVOUS", "h:29500"},
                                  {"SY_TOKEN", "t"}, {"SY_JOB_ID", "j7"}, {"RANK", "5"}, {"WORLD_SIZE", "9"},
                                  {"OMPI_COMM_WORLD_RANK", "6"}});
  EXPECT_EQ(e.launcher, "sy-run");
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 2);
  EXPECT_EQ(e.node, "n1");
  EXPECT_EQ(e.rendezvous, "h:29500");
  EXPECT_EQ(e.job_id, "j7");
}

TEST(LaunchEnvTest, TorchrunUsesMasterAddress) {
  auto e = LaunchEnv::detect(Vars{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                                  {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "1234"}, {"SY_TOKEN", "x"},
                                  {"OMPI_COMM_WORLD_RANK", "0"}});
  EXPECT_EQ(e.launcher, "torchrun");
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.rendezvous, "10.0.0.1:1234");
}

TEST(LaunchEnvTest, OpenMpiThenSlurm) {
  auto o = LaunchEnv::detect(Vars{{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                  {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                  {"SLURM_PROCID", "1"}, {"SY_RENDEZVOUS", "file:/tmp/x"}});
  EXPECT_EQ(o.launcher, "openmpi");
  EXPECT_EQ(o.rank, 2);
  EXPECT_EQ(o.local_size, 2);
  auto s = LaunchEnv::detect(Vars{{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "7"}, {"SLURM_LOCALID", "1"},
                                  {"SLURM_NODEID", "2"}, {"SLURM_STEP_TASKS_PER_NODE", "2(x2),3"},
                                  {"SY_RENDEZVOUS", "h:1"}, {"SY_TOKEN", "t"}});
  EXPECT_EQ(s.launcher, "slurm");
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.world_size, 7);
  EXPECT_EQ(s.local_size, 3);
}

TEST(LaunchEnvTest, SlurmTasksPerNode) {
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 0), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 2), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 3), 1);
  EXPECT_THROW(slurm_tasks_on_node("2(x3),1", 4), InvalidArgument);
  EXPECT_THROW(slurm_tasks_on_node("abc", 0), InvalidArgument);
}

TEST(LaunchEnvTest, MissingAddressOrTokenIsAClearError) {
  try {
    LaunchEnv::detect(Vars{{"SY_RANK", "0"}, {"SY_WORLD_SIZE", "2"}, {"SY_TOKEN", "t"}});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("SY_RENDEZVOUS"), std::string::npos) << e.what();
  }
  try {
    LaunchEnv::detect(Vars{{"SY_RANK", "0"}, {"SY_WORLD_SIZE", "2"}, {"SY_RENDEZVOUS", "h:1"}});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("SY_TOKEN"), std::string::npos) << e.what();
  }
  EXPECT_THROW(LaunchEnv::detect(Vars{{"SY_RANK", "2"}, {"SY_WORLD_SIZE", "2"}}), InvalidArgument);
  EXPECT_THROW(LaunchEnv::detect(Vars{{"SY_RANK", "x"}, {"SY_WORLD_SIZE", "2"}}), InvalidArgument);
  // A single process needs neither.
  auto e = LaunchEnv::detect(Vars{});
  EXPECT_EQ(e.launcher, "none");
  EXPECT_EQ(e.world_size, 1);
}

void exercise_store(Store& a, Store& b) {
  a.set("k", {1, 2, 3});
  EXPECT_EQ(b.get("k", 1000ms), (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_TRUE(b.check("k"));
  EXPECT_FALSE(b.check("absent"));
  EXPECT_EQ(a.add("n", 5), 5);
  EXPECT_EQ(b.add("n", -2), 3);
  std::thread late([&] {
    std::this_thread::sleep_for(50ms);
    a.set("late", {9});
  });
  EXPECT_EQ(b.get("late", 5000ms), std::vector<uint8_t>{9});
  late.join();
  EXPECT_THROW(b.get("never", 30ms), Timeout);
}

TEST(StoreTest, MemoryStore) {
  auto s = make_memory_store();
  exercise_store(*s, *s);
}

TEST(StoreTest, FileStore) {
  char tmpl[] = "/tmp/sy_store_XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  auto a = make_file_store(dir), b = make_file_store(dir);
  exercise_store(*a, *b);
  std::filesystem::remove_all(dir);
}

TEST(StoreTest, TcpStoreServesClients) {
  int port = testing::free_port();
  TcpStoreOptions o;
  o.port = port;
  o.token = "secret";
  o.is_server = true;
  auto server = make_tcp_store(o);
  o.is_server = false;
  auto client = make_tcp_store(o);
  exercise_store(*server, *client);
}

TEST(StoreTest, TcpStoreRefusesWrongToken) {
  int port = testing::free_port();
  TcpStoreOptions o;
  o.port = port;
  o.token = "secret";
  o.is_server = true;
  auto server = make_tcp_store(o);
  o.is_server = false;
  o.token = "guess";
  o.timeout = 2000ms;
  try {
    make_tcp_store(o);
    FAIL() << "connected with a wrong token";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("token"), std::string::npos) << e.what();
  }
}

TEST(CommunicatorTest, SingleRankOps) {
  auto c = Communicator::init(LaunchEnv::detect(Vars{}));
  ASSERT_EQ(c->size(), 1);
  EXPECT_EQ(c->rank(), 0);
  std::vector<float> a = {1.5f, -2.f, 3.f}, b(3);
  c->all_reduce(a.data(), b.data(), 3, DataType::kFloat32, ReduceOp::kSum);
  EXPECT_EQ(a, b);
  std::vector<int32_t> s = {1, 2}, r(2);
  c->all_to_all(s.data(), r.data(), 2, DataType::kInt32);
  EXPECT_EQ(s, r);
  int32_t x = 7, y = 0;
  Work w = c->irecv(&y, 4, 0, 3);
  c->send(&x, 4, 0, 3);
  w.wait();
  EXPECT_EQ(y, 7);
  c->barrier();
  EXPECT_THROW(c->all_reduce(a.data(), b.data(), 3, DataType::kUint8, ReduceOp::kSum), InvalidArgument);
  EXPECT_THROW(c->split(0, 0)->broadcast(a.data(), 3, DataType::kFloat32, 1), InvalidArgument);
  EXPECT_TRUE(Work().test());
}

}  // namespace
}  // namespace switchyard::comm
