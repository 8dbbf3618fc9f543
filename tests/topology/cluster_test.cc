// Cluster: the shipped cluster files (rails, link classes, NUMA), contiguous and local
// clusters, and every kind of bad cluster file.
#include "switchyard/topology/cluster.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "switchyard/common/error.h"

namespace switchyard::topology {
namespace {

namespace fs = std::filesystem;

std::string data(const std::string& name) {
  return std::string(SY_TOPO_DATA) + "/" + name;
}

TEST(ClusterTest, TwoH800HostsRailsFollowTheNearestNic) {
  Cluster c = Cluster::load_json(data("cluster-2x8-h800.json"));
  ASSERT_EQ(c.num_ranks(), 16);
  ASSERT_EQ(c.num_nodes(), 2);
  for (int r = 0; r < 16; ++r) {
    EXPECT_EQ(c.node_of(r), r / 8);
    EXPECT_EQ(c.local_rank(r), r % 8);
    EXPECT_EQ(c.gpu_of(r), r % 8);
    EXPECT_EQ(c.nic_of(r), r % 8);  // 8-NIC host: GPU g's nearest NIC is NIC g
    EXPECT_EQ(c.nic_name(r), "mlx5_" + std::to_string(r % 8));
    EXPECT_EQ(c.rail_of(r), r % 8);
    EXPECT_EQ(c.rail_peers(r), std::vector<int>({r % 8, r % 8 + 8}));
    const HostTopology* h = c.host(c.node_of(r));
    ASSERT_NE(h, nullptr);
    EXPECT_EQ(h->gpu(c.gpu_of(r)).numa, (r % 8) / 4);
  }
  EXPECT_EQ(c.node_name(0), "node0");
  EXPECT_EQ(c.node_name(1), "node1");
  // Both nodes use the same XML file: loaded once, shared.
  EXPECT_EQ(c.host(0), c.host(1));
}

TEST(ClusterTest, FourNicHostsPutTwoRanksOnEachRail) {
  Cluster c = Cluster::load_json(data("cluster-2x8-h800-4nic.json"));
  for (int r = 0; r < 16; ++r) {
    EXPECT_EQ(c.rail_of(r), (r % 8) / 2) << "rank " << r;
    EXPECT_EQ(c.nic_name(r), "mlx5_" + std::to_string((r % 8) / 2));
  }
}

TEST(ClusterTest, LinkClassesAcrossRanks) {
  Cluster c = Cluster::load_json(data("cluster-2x8-h800.json"));
  for (int a = 0; a < 16; ++a)
    for (int b = 0; b < 16; ++b) {
      LinkClass want = a == b ? LinkClass::kSameDevice : a / 8 != b / 8 ? LinkClass::kNetwork : LinkClass::kSameNode;
      EXPECT_EQ(c.link_class(a, b), want) << a << "," << b;
    }
  // PCIe-only hosts: ranks 0 and 1 are on GPUs 0 and 2 (different sockets, no NVLink).
  Cluster p = Cluster::load_json(data("cluster-2x2-pcie.json"));
  EXPECT_EQ(p.link_class(0, 1), LinkClass::kSameNode);
  EXPECT_EQ(p.link_class(0, 2), LinkClass::kNetwork);
  EXPECT_EQ(p.rail_of(0), 0);
  EXPECT_EQ(p.rail_of(1), 1);
  EXPECT_EQ(p.nic_name(3), "mlx5_1");
}

// A scratch directory holding cluster files (and copies of the XML they name).
class ClusterFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sy_cluster_test." + std::to_string(getpid()));
    fs::create_directories(dir_ / "hosts");
    fs::copy_file(data("pcie4-numa.xml"), dir_ / "hosts" / "pcie.xml", fs::copy_options::overwrite_existing);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& text) {
    std::string path = (dir_ / ("c" + std::to_string(n_++) + ".json")).string();
    std::ofstream(path) << text;
    return path;
  }
  // Runs load_json on text and checks the error class and that each part is in the message.
  void expect_error(const std::string& text, ErrorCode code, const std::vector<std::string>& parts) {
    std::string path = write(text);
    try {
      Cluster::load_json(path);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      for (const auto& p : parts)
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\nlacks: " << p;
    }
  }
  fs::path dir_;
  int n_ = 0;
};

TEST_F(ClusterFileTest, XmlPathIsRelativeToTheJsonFile) {
  Cluster c = Cluster::load_json(write(R"({"hosts": [{"name": "a", "xml": "hosts/pcie.xml"}, {"name": "b"}],
      "ranks": [{"host": "a", "gpu": 0}, {"host": "a", "gpu": 1}, {"host": "b"}, {"host": "a", "gpu": 1}]})"));
  EXPECT_EQ(c.num_ranks(), 4);
  EXPECT_EQ(c.num_nodes(), 2);
  EXPECT_EQ(c.rank_map().ranks_of_node(0), std::vector<int>({0, 1, 3}));
  EXPECT_EQ(c.link_class(0, 1), LinkClass::kSamePcieSwitch);  // GPUs 0, 1 share a switch
  EXPECT_EQ(c.link_class(1, 3), LinkClass::kSameDevice);  // both on GPU 1
  EXPECT_EQ(c.link_class(0, 2), LinkClass::kNetwork);
  EXPECT_EQ(c.host(1), nullptr);
  EXPECT_EQ(c.gpu_of(2), -1);
  EXPECT_EQ(c.nic_of(2), -1);
  EXPECT_EQ(c.rail_of(2), 0);  // no NIC known: the local rank
  EXPECT_FALSE(c.rank_map().nodes_contiguous());
}

TEST_F(ClusterFileTest, BadFilesNameTheProblem) {
  expect_error("{\"hosts\": [", ErrorCode::kInvalidArgument, {"not valid JSON"});
  expect_error("[1, 2]", ErrorCode::kInvalidArgument, {"top level must be an object"});
  expect_error(R"({"hosts": [], "ranks": [{"host": "a"}]})", ErrorCode::kInvalidArgument,
               {"\"hosts\" must be a non-empty array"});
  expect_error(R"({"hosts": [{"name": "a"}]})", ErrorCode::kInvalidArgument, {"\"ranks\" must be a non-empty array"});
  expect_error(R"({"hosts": [{"name": "a"}], "ranks": [{"host": "a"}], "rank": 1})", ErrorCode::kInvalidArgument,
               {"unknown key \"rank\""});
  expect_error(R"({"hosts": [{"name": "a"}, {"name": "a"}], "ranks": [{"host": "a"}]})", ErrorCode::kInvalidArgument,
               {"hosts[1]", "duplicate host name 'a'"});
  expect_error(R"({"hosts": [{"name": "a"}, {"name": "b"}], "ranks": [{"host": "a"}, {"host": "c"}]})",
               ErrorCode::kInvalidArgument, {"ranks[1]", "unknown host 'c'", "hosts: a, b"});
  expect_error(R"({"hosts": [{"name": "a", "xml": "hosts/pcie.xml"}], "ranks": [{"host": "a", "gpu": 4}]})",
               ErrorCode::kInvalidArgument, {"ranks[0]", "gpu 4 out of range", "has 4 GPUs"});
  expect_error(R"({"hosts": [{"name": "a"}], "ranks": [{"host": "a", "gpu": -1}]})", ErrorCode::kInvalidArgument,
               {"gpu -1 must be >= 0"});
  expect_error(R"({"hosts": [{"name": "a"}], "ranks": [{"host": "a", "gpu": "0"}]})", ErrorCode::kInvalidArgument,
               {"\"gpu\" must be an integer"});
  expect_error(R"({"hosts": [{"name": "a"}, {"name": "b"}], "ranks": [{"host": "a"}]})", ErrorCode::kInvalidArgument,
               {"host 'b' has no ranks"});
  expect_error(R"({"hosts": [{"name": "a", "xml": "hosts/missing.xml"}], "ranks": [{"host": "a"}]})", ErrorCode::kIo,
               {"host 'a'", "hosts/missing.xml", "cannot open"});
  std::string garbled = write("<topology><object type=");
  expect_error(R"({"hosts": [{"name": "a", "xml": ")" + fs::path(garbled).filename().string() +
                   R"("}], "ranks": [{"host": "a"}]})",
               ErrorCode::kInvalidArgument, {"host 'a'", "hwloc rejected it"});
  try {
    Cluster::load_json((dir_ / "absent.json").string());
    ADD_FAILURE();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("absent.json': cannot open"), std::string::npos) << e.what();
  }
}

TEST(ClusterTest, RequireNumRanksSaysWhatDoesNotFit) {
  Cluster c = Cluster::load_json(data("cluster-2x2-pcie.json"));
  EXPECT_NO_THROW(c.require_num_ranks(4, "sy-run -n"));
  try {
    c.require_num_ranks(8, "sy-run -n");
    FAIL();
  } catch (const InvalidArgument& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("sy-run -n: the rank map"), std::string::npos) << m;
    EXPECT_NE(m.find("cluster-2x2-pcie.json describes 4 ranks but the job has 8"), std::string::npos) << m;
  }
  EXPECT_THROW(c.gpu_of(4), InvalidArgument);
  EXPECT_THROW(c.link_class(0, -1), InvalidArgument);
  EXPECT_THROW(c.host(2), InvalidArgument);
}

TEST(ClusterTest, ContiguousHasNoHardware) {
  Cluster c = Cluster::contiguous(6, 3);
  EXPECT_EQ(c.num_ranks(), 6);
  EXPECT_EQ(c.num_nodes(), 3);
  for (int r = 0; r < 6; ++r) {
    EXPECT_EQ(c.node_of(r), r / 2);
    EXPECT_EQ(c.gpu_of(r), -1);
    EXPECT_EQ(c.rail_of(r), r % 2);
    EXPECT_EQ(c.host(c.node_of(r)), nullptr);
    for (int q = 0; q < 6; ++q)
      EXPECT_EQ(c.link_class(r, q), r == q           ? LinkClass::kSameDevice
                                    : r / 2 == q / 2 ? LinkClass::kSameNode
                                                     : LinkClass::kNetwork);
  }
  EXPECT_THROW(Cluster::contiguous(5, 2), InvalidArgument);
}

TEST(ClusterTest, LocalClusterRepeatsThisMachineOnEachNode) {
  Cluster one = Cluster::local(3);
  EXPECT_EQ(one.num_nodes(), 1);
  ASSERT_NE(one.host(0), nullptr);
  int gpus = one.host(0)->num_gpus();
  for (int r = 0; r < 3; ++r) EXPECT_EQ(one.gpu_of(r), gpus ? r % gpus : -1);
  Cluster two = Cluster::local(6, 2);
  EXPECT_EQ(two.host(0), two.host(1));
  EXPECT_EQ(two.node_name(1), two.host(0)->hostname() + "/node1");
  for (int r = 0; r < 6; ++r) EXPECT_EQ(two.gpu_of(r), gpus ? (r % 3) % gpus : -1);
  EXPECT_THROW(Cluster::local(5, 2), InvalidArgument);
}

}  // namespace
}  // namespace switchyard::topology
