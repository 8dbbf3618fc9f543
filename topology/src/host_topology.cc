// HostTopology queries and reports (discovery itself is in hwloc_discovery.cc).
#include "switchyard/topology/host_topology.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pci_path.h"
#include "switchyard/common/error.h"

namespace switchyard::topology {

std::string PciAddress::str() const {
  char buf[32];
  snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", domain, bus, dev, func);
  return buf;
}

const char* nic_kind_name(NicKind k) {
  return k == NicKind::kInfiniBand ? "infiniband" : "ethernet";
}

const char* pcie_path_name(PciePath p) {
  switch (p) {
    case PciePath::kSameSwitch:
      return "same-switch";
    case PciePath::kSameHostBridge:
      return "same-host-bridge";
    case PciePath::kSamePackage:
      return "same-package";
    case PciePath::kCrossPackage:
      return "cross-package";
  }
  return "?";
}

const Gpu& HostTopology::gpu(int index) const {
  SY_REQUIRE(index >= 0 && index < num_gpus(), "host " << hostname_ << " (" << source_ << "): GPU index " << index
                                                       << " out of range [0, " << num_gpus() << ")");
  return gpus_[index];
}

const Nic& HostTopology::nic(int index) const {
  SY_REQUIRE(index >= 0 && index < num_nics(), "host " << hostname_ << " (" << source_ << "): NIC index " << index
                                                       << " out of range [0, " << num_nics() << ")");
  return nics_[index];
}

double HostTopology::nvlink_gbps(int a, int b) const {
  gpu(a);
  gpu(b);
  return nvlink_gbps_[a][b];
}

namespace {

PciePath path_between(const std::vector<PciBridge>& pa, int pkg_a, const std::vector<PciBridge>& pb, int pkg_b) {
  if (share_switch(pa, pb)) return PciePath::kSameSwitch;
  if (common_prefix(pa, pb) > 0) return PciePath::kSameHostBridge;
  if (pkg_a >= 0 && pkg_a == pkg_b) return PciePath::kSamePackage;
  return PciePath::kCrossPackage;
}

}  // namespace

PciePath HostTopology::gpu_gpu_path(int a, int b) const {
  const Gpu& ga = gpu(a);
  const Gpu& gb = gpu(b);
  return path_between(ga.pci_path, ga.package, gb.pci_path, gb.package);
}

PciePath HostTopology::gpu_nic_path(int g, int n) const {
  const Gpu& gg = gpu(g);
  const Nic& nn = nic(n);
  return path_between(gg.pci_path, gg.package, nn.pci_path, nn.package);
}

LinkClass HostTopology::gpu_link_class(int a, int b) const {
  if (gpu(a).index == gpu(b).index) return LinkClass::kSameDevice;
  if (nvlink(a, b)) return LinkClass::kSameNode;
  if (gpu_gpu_path(a, b) == PciePath::kSameSwitch) return LinkClass::kSamePcieSwitch;
  return LinkClass::kSameNode;
}

std::string HostTopology::summary() const {
  std::ostringstream os;
  os << "host " << hostname_ << " (" << source_ << "): " << num_packages_ << " package"
     << (num_packages_ == 1 ? "" : "s") << ", " << num_numa_nodes_ << " NUMA node" << (num_numa_nodes_ == 1 ? "" : "s")
     << ", " << num_cores_ << " cores, " << num_pus_ << " PUs, " << num_gpus() << " GPU" << (num_gpus() == 1 ? "" : "s")
     << ", " << num_nics() << " NIC" << (num_nics() == 1 ? "" : "s") << "\n";
  for (const auto& g : gpus_) {
    os << "  gpu" << g.index << " " << g.name << " " << g.model << " pci=" << g.pci.str() << " package=" << g.package
       << " numa=" << g.numa << " nic=";
    if (g.nic >= 0)
      os << nics_[g.nic].name << " (" << pcie_path_name(gpu_nic_path(g.index, g.nic)) << ")";
    else
      os << "none";
    os << "\n";
  }
  for (const auto& n : nics_)
    os << "  nic" << n.index << " " << n.name << " " << nic_kind_name(n.kind) << " pci=" << n.pci.str()
       << " package=" << n.package << " numa=" << n.numa << (n.netdev.empty() ? "" : " netdev=" + n.netdev) << "\n";
  os << "  nvlink: " << nvlink_source_;
  if (!gpus_.empty()) {
    int pairs = 0;
    for (int a = 0; a < num_gpus(); ++a)
      for (int b = a + 1; b < num_gpus(); ++b) pairs += nvlink(a, b);
    os << ", " << pairs << " of " << num_gpus() * (num_gpus() - 1) / 2 << " GPU pairs connected";
  }
  os << "\n";
  return os.str();
}

namespace {

nlohmann::json path_json(const std::vector<PciBridge>& path) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& b : path) j.push_back(b.host_bridge ? std::string("host-bridge") : b.address.str());
  return j;
}

}  // namespace

std::string HostTopology::to_json() const {
  nlohmann::json j;
  j["hostname"] = hostname_;
  j["source"] = source_;
  j["packages"] = num_packages_;
  j["numa_nodes"] = num_numa_nodes_;
  j["cores"] = num_cores_;
  j["pus"] = num_pus_;
  j["gpus"] = nlohmann::json::array();
  for (const auto& g : gpus_) {
    j["gpus"].push_back({{"index", g.index},
                         {"name", g.name},
                         {"model", g.model},
                         {"pci", g.pci.str()},
                         {"package", g.package},
                         {"numa", g.numa},
                         {"switch", g.switch_id},
                         {"pci_path", path_json(g.pci_path)},
                         {"nic", g.nic},
                         {"nic_name", g.nic >= 0 ? nics_[g.nic].name : std::string()}});
  }
  j["nics"] = nlohmann::json::array();
  for (const auto& n : nics_) {
    j["nics"].push_back({{"index", n.index},
                         {"name", n.name},
                         {"kind", nic_kind_name(n.kind)},
                         {"netdev", n.netdev},
                         {"pci", n.pci.str()},
                         {"package", n.package},
                         {"numa", n.numa},
                         {"switch", n.switch_id},
                         {"pci_path", path_json(n.pci_path)}});
  }
  j["nvlink_source"] = nvlink_source_;
  j["nvlink_gbps"] = nvlink_gbps_;
  nlohmann::json links = nlohmann::json::array();
  for (int a = 0; a < num_gpus(); ++a) {
    nlohmann::json row = nlohmann::json::array();
    for (int b = 0; b < num_gpus(); ++b) row.push_back(link_class_name(gpu_link_class(a, b)));
    links.push_back(row);
  }
  j["gpu_link_class"] = links;
  return j.dump();
}

}  // namespace switchyard::topology
