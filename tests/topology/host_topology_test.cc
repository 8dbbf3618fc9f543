// HostTopology: discovery on the shipped simulated hosts (whose layouts are documented in
// topology/data/gen_hosts.py), on hand-written XML corner cases, and on this machine (checked
// against /sys and sysconf).
#include "switchyard/topology/host_topology.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::topology {
namespace {

namespace fs = std::filesystem;

std::string data(const std::string& name) {
  return std::string(SY_TOPO_DATA) + "/" + name;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int count_of(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

// A temporary file removed at scope exit.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& text)
      : path_(fs::temp_directory_path() / (name + "." + std::to_string(getpid()))) {
    std::ofstream(path_) << text;
  }
  ~TempFile() { fs::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

TEST(HostTopologyTest, EightNicHostCountsMatchTheXml) {
  std::string xml = read_text(data("h800x8-8nic.xml"));
  HostTopology h = HostTopology::load_xml(data("h800x8-8nic.xml"));
  EXPECT_EQ(h.num_packages(), count_of(xml, "type=\"Package\""));
  EXPECT_EQ(h.num_numa_nodes(), count_of(xml, "type=\"NUMANode\""));
  EXPECT_EQ(h.num_cores(), count_of(xml, "type=\"Core\""));
  EXPECT_EQ(h.num_pus(), count_of(xml, "type=\"PU\""));
  EXPECT_EQ(h.num_gpus(), count_of(xml, "pci_type=\"0302 [10de:"));
  EXPECT_EQ(h.num_nics(), count_of(xml, "osdev_type=\"3\""));
  EXPECT_EQ(h.num_gpus(), 8);
  EXPECT_EQ(h.num_nics(), 8);
  EXPECT_EQ(h.hostname(), "h800x8-8nic");
}

TEST(HostTopologyTest, EightNicHostPairsGpuWithNicOnItsLeafAndSocket) {
  HostTopology h = HostTopology::load_xml(data("h800x8-8nic.xml"));
  for (int g = 0; g < 8; ++g) {
    const Gpu& gpu = h.gpu(g);
    EXPECT_EQ(gpu.name, "cuda" + std::to_string(g));
    EXPECT_EQ(gpu.model, "NVIDIA H800 80GB HBM3");
    EXPECT_EQ(gpu.nic, g) << "gpu " << g;  // layout: GPU g and NIC g share a leaf bridge
    EXPECT_EQ(h.nic(gpu.nic).name, "mlx5_" + std::to_string(g));
    EXPECT_EQ(gpu.numa, g / 4);  // GPUs 0-3 on socket 0
    EXPECT_EQ(gpu.package, g / 4);
    EXPECT_EQ(h.nic(g).numa, g / 4);
    EXPECT_EQ(h.nic(g).kind, NicKind::kInfiniBand);
    EXPECT_FALSE(h.nic(g).netdev.empty());
    // host bridge, switch, leaf bridge
    ASSERT_EQ(gpu.pci_path.size(), 3u);
    EXPECT_TRUE(gpu.pci_path[0].host_bridge);
    EXPECT_EQ(h.gpu_nic_path(g, g), PciePath::kSameSwitch);
  }
  // PCI bus order numbering.
  for (int g = 1; g < 8; ++g) EXPECT_LT(h.gpu(g - 1).pci.bus, h.gpu(g).pci.bus);
  EXPECT_EQ(h.gpu(0).pci.str(), "0000:12:00.0");
}

TEST(HostTopologyTest, FourNicHostSharesEachNicBetweenTwoGpus) {
  HostTopology h = HostTopology::load_xml(data("h800x8-4nic.xml"));
  ASSERT_EQ(h.num_gpus(), 8);
  ASSERT_EQ(h.num_nics(), 4);
  for (int g = 0; g < 8; ++g) {
    EXPECT_EQ(h.gpu(g).nic, g / 2) << "gpu " << g;  // layout: switch k holds GPUs 2k, 2k+1 and NIC k
    EXPECT_EQ(h.gpu(g).switch_id, h.nic(g / 2).switch_id);
    EXPECT_EQ(h.gpu(g).numa, g / 4);
  }
  EXPECT_EQ(h.gpu_gpu_path(0, 1), PciePath::kSameSwitch);
  EXPECT_EQ(h.gpu_gpu_path(0, 2), PciePath::kSameHostBridge);
  EXPECT_EQ(h.gpu_gpu_path(0, 4), PciePath::kCrossPackage);
}

TEST(HostTopologyTest, NvlinkFromXmlMatrix) {
  HostTopology h = HostTopology::load_xml(data("h800x8-8nic.xml"));
  EXPECT_EQ(h.nvlink_source(), "xml:NVLinkBandwidth");
  for (int a = 0; a < 8; ++a)
    for (int b = 0; b < 8; ++b) {
      EXPECT_EQ(h.nvlink_gbps(a, b), a == b ? 0.0 : 450.0);
      // NVLink everywhere: any two GPUs are in the NVLink domain, whatever their PCIe path.
      EXPECT_EQ(h.gpu_link_class(a, b), a == b ? LinkClass::kSameDevice : LinkClass::kSameNode);
    }
}

TEST(HostTopologyTest, PcieHostLinkClassesAndNicByNuma) {
  HostTopology h = HostTopology::load_xml(data("pcie4-numa.xml"));
  ASSERT_EQ(h.num_gpus(), 4);
  ASSERT_EQ(h.num_nics(), 2);
  EXPECT_EQ(h.nvlink_source(), "none");
  // Each NIC sits on its own host bridge: no GPU shares a PCI ancestor with it, so the NUMA
  // node decides (GPUs 0,1 on socket 0 -> mlx5_0; GPUs 2,3 on socket 1 -> mlx5_1).
  for (int g = 0; g < 4; ++g) {
    EXPECT_EQ(h.gpu(g).numa, g / 2);
    EXPECT_EQ(h.gpu(g).nic, g / 2) << "gpu " << g;
    EXPECT_EQ(h.gpu_nic_path(g, g / 2), PciePath::kSamePackage);
    EXPECT_EQ(h.gpu_nic_path(g, 1 - g / 2), PciePath::kCrossPackage);
  }
  EXPECT_EQ(h.gpu_link_class(0, 0), LinkClass::kSameDevice);
  EXPECT_EQ(h.gpu_link_class(0, 1), LinkClass::kSamePcieSwitch);
  EXPECT_EQ(h.gpu_link_class(2, 3), LinkClass::kSamePcieSwitch);
  EXPECT_EQ(h.gpu_link_class(1, 2), LinkClass::kSameNode);
  EXPECT_FALSE(h.nvlink(0, 1));
}

// A minimal host: one package, a VGA-class NVIDIA GPU without OS devices, an AMD GPU (not
// ours), and an Ethernet NIC; used for the fallbacks.
const char* kSmallXml = R"(<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE topology SYSTEM "hwloc2.dtd">
<topology version="2.0">
  <object type="Machine" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" allowed_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" allowed_nodeset="0x00000001" gp_index="1">
    <object type="Package" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="2">
      <object type="NUMANode" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="3" local_memory="1000000000"/>
      <object type="Core" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="4">
        <object type="PU" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="5"/>
      </object>
      <object type="Bridge" gp_index="6" bridge_type="0-1" depth="0" bridge_pci="0000:[00-0f]">
        <object type="PCIDev" gp_index="7" pci_busid="0000:03:00.0" pci_type="0300 [10de:2684] [10de:16f3] a1" pci_link_speed="0.000000"/>
        <object type="PCIDev" gp_index="8" pci_busid="0000:02:00.0" pci_type="0300 [1002:744c] [1002:0e3b] c8" pci_link_speed="0.000000"/>
        <object type="PCIDev" gp_index="9" pci_busid="0000:04:00.0" pci_type="0200 [8086:1533] [8086:0000] 03" pci_link_speed="0.000000">
          <object type="OSDev" gp_index="10" name="enp4s0" osdev_type="2"/>
        </object>
      </object>
    </object>
  </object>
</topology>
)";

TEST(HostTopologyTest, VgaClassGpuWithoutOsDevicesAndEthernetNic) {
  TempFile f("small_host.xml", kSmallXml);
  HostTopology h = HostTopology::load_xml(f.path());
  ASSERT_EQ(h.num_gpus(), 1);  // the AMD GPU is not counted
  EXPECT_EQ(h.gpu(0).name, "gpu0");
  EXPECT_EQ(h.gpu(0).model, "NVIDIA [10de:2684]");
  EXPECT_EQ(h.gpu(0).pci.str(), "0000:03:00.0");
  ASSERT_EQ(h.num_nics(), 1);
  EXPECT_EQ(h.nic(0).name, "enp4s0");
  EXPECT_EQ(h.nic(0).kind, NicKind::kEthernet);
  EXPECT_EQ(h.gpu(0).nic, 0);
  EXPECT_EQ(h.gpu_nic_path(0, 0), PciePath::kSameHostBridge);
  EXPECT_EQ(h.gpu(0).switch_id, -1);
}

void expect_error(const std::function<void()>& fn, ErrorCode code, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
  }
}

TEST(HostTopologyTest, MissingGarbledAndForeignXmlAreClearErrors) {
  expect_error([] { HostTopology::load_xml("/nonexistent/host.xml"); }, ErrorCode::kIo,
               {"/nonexistent/host.xml", "cannot open", "No such file"});
  std::string xml(kSmallXml);
  TempFile truncated("truncated.xml", xml.substr(0, xml.size() / 2));
  expect_error([&] { HostTopology::load_xml(truncated.path()); }, ErrorCode::kInvalidArgument,
               {truncated.path(), "hwloc rejected it"});
  TempFile other("not_hwloc.xml", "<?xml version=\"1.0\"?><html><body>hi</body></html>");
  expect_error([&] { HostTopology::load_xml(other.path()); }, ErrorCode::kInvalidArgument,
               {other.path(), "not an hwloc XML file"});
  TempFile empty("empty.xml", "");
  expect_error([&] { HostTopology::load_xml(empty.path()); }, ErrorCode::kInvalidArgument, {"file is empty"});
  HostTopology h = HostTopology::load_xml(data("h800x8-4nic.xml"));
  expect_error([&] { h.gpu(8); }, ErrorCode::kInvalidArgument, {"GPU index 8 out of range [0, 8)"});
  expect_error([&] { h.nic(-1); }, ErrorCode::kInvalidArgument, {"NIC index -1 out of range [0, 4)"});
}

// NVIDIA display/3D controllers on this machine, read straight from sysfs.
int sysfs_nvidia_gpus() {
  int n = 0;
  std::error_code ec;
  for (const auto& dev : fs::directory_iterator("/sys/bus/pci/devices", ec)) {
    std::string vendor = read_text((dev.path() / "vendor").string());
    std::string cls = read_text((dev.path() / "class").string());
    if (vendor.rfind("0x10de", 0) == 0 && (cls.rfind("0x0302", 0) == 0 || cls.rfind("0x0300", 0) == 0)) ++n;
  }
  return n;
}

TEST(HostTopologyTest, LocalDiscoveryMatchesTheSystem) {
  HostTopology h = HostTopology::discover_local();
  EXPECT_EQ(h.source(), "local");
  EXPECT_GE(h.num_packages(), 1);
  EXPECT_GE(h.num_numa_nodes(), 1);
  EXPECT_GE(h.num_cores(), 1);
  EXPECT_EQ(h.num_pus(), sysconf(_SC_NPROCESSORS_ONLN));
  EXPECT_EQ(h.num_gpus(), sysfs_nvidia_gpus());
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  EXPECT_EQ(h.hostname(), name);
  if (h.num_gpus() == 0) {
    EXPECT_EQ(h.nvlink_source(), "none");
  }
  // Every NIC has a PCI address that really exists.
  for (const auto& n : h.nics()) EXPECT_TRUE(fs::exists("/sys/bus/pci/devices/" + n.pci.str())) << n.name;
}

TEST(HostTopologyTest, JsonHasTheSameFacts) {
  HostTopology h = HostTopology::load_xml(data("h800x8-4nic.xml"));
  auto j = nlohmann::json::parse(h.to_json());
  EXPECT_EQ(j["nvlink_source"], "xml:NVLinkBandwidth");
  ASSERT_EQ(j["gpus"].size(), 8u);
  ASSERT_EQ(j["nics"].size(), 4u);
  for (int g = 0; g < 8; ++g) {
    EXPECT_EQ(j["gpus"][g]["nic"], g / 2);
    EXPECT_EQ(j["gpus"][g]["nic_name"], "mlx5_" + std::to_string(g / 2));
    EXPECT_EQ(j["gpus"][g]["numa"], g / 4);
    EXPECT_EQ(j["gpus"][g]["pci_path"].size(), 3u);
    EXPECT_EQ(j["gpu_link_class"][g][g], "same-device");
  }
  EXPECT_EQ(j["gpu_link_class"][0][5], "same-node");
  EXPECT_EQ(j["nics"][3]["kind"], "infiniband");
  std::string s = h.summary();
  EXPECT_NE(s.find("8 GPUs, 4 NICs"), std::string::npos) << s;
}

}  // namespace
}  // namespace switchyard::topology
