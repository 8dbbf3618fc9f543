// HostTopology: one machine as plain data (packages, NUMA nodes, cores, GPUs, NICs, PCI paths,
// NVLink), discovered with hwloc from the running machine or from an hwloc XML file.
//
// Discovery happens once, in the factory functions; afterwards a HostTopology holds no hwloc
// handle and is a cheap, copyable value that is safe to read from any thread.
//
// GPUs are NVIDIA PCI devices (class 0x0302 3D or 0x0300 VGA, vendor 0x10de), numbered in PCI
// bus order. NICs are InfiniBand/OpenFabrics OS devices (mlx5_0, ...) or, for PCI NICs without
// one, Ethernet OS devices, also numbered in PCI bus order. Each GPU's nearest NIC is the one with
// the deepest common PCI ancestor (a shared PCIe switch beats a shared host bridge beats the same
// NUMA node beats anything else; ties go to the lower NIC index). NVLink comes from NVML at run
// time when a driver is present (local discovery only) and from an hwloc distances matrix named
// "NVLinkBandwidth" over the GPU objects otherwise (see docs/topology.md).
#pragma once

#include <string>
#include <vector>

#include "switchyard/topology/rank_map.h"

namespace switchyard::topology {

struct PciAddress {
  int domain = 0;
  int bus = 0;
  int dev = 0;
  int func = 0;
  std::string str() const;  // "0000:19:00.0"
  bool operator==(const PciAddress&) const = default;
};

// A PCI bridge on the path from the CPU to a device. depth 0 is the host bridge's child level.
struct PciBridge {
  PciAddress address;  // of the bridge's upstream port (zeros for a host bridge)
  int depth = 0;  // hwloc bridge depth
  bool host_bridge = false;
  int id = 0;  // unique per bridge within the host; equal ids mean the same bridge
};

struct Gpu {
  int index = 0;  // 0..num_gpus-1 in PCI bus order
  std::string name;  // OS device name when the XML or system has one ("cuda0", "nvml0"), else "gpu<index>"
  std::string model;  // "NVIDIA H100 80GB HBM3" when known, else "NVIDIA [10de:2330]"
  PciAddress pci;
  int package = -1;  // logical index of the package whose cpuset covers the GPU, -1 unknown
  int numa = -1;  // logical index of the nearest NUMA node, -1 unknown
  std::vector<PciBridge> pci_path;  // bridges from the CPU side down to the GPU (outermost first)
  int switch_id = -1;  // id of the outermost non-host bridge above it (its PCIe switch tree), -1 if none
  int nic = -1;  // index of the nearest NIC, -1 when the host has none
};

enum class NicKind { kInfiniBand, kEthernet };
const char* nic_kind_name(NicKind k);  // "infiniband", "ethernet"

struct Nic {
  int index = 0;  // 0..num_nics-1 in PCI bus order
  std::string name;  // "mlx5_0" (OpenFabrics) or the network interface ("eth0")
  std::string netdev;  // network interface of the same PCI device, empty if none
  NicKind kind = NicKind::kEthernet;
  PciAddress pci;
  bool has_pci = false;  // false for virtual NICs with no PCI device
  int package = -1;
  int numa = -1;
  std::vector<PciBridge> pci_path;
  int switch_id = -1;
};

// How a PCI path between two devices runs (NCCL's PIX/PXB vs PHB vs SYS).
enum class PciePath { kSameSwitch, kSameHostBridge, kSamePackage, kCrossPackage };
const char* pcie_path_name(PciePath p);  // "same-switch", "same-host-bridge", "same-package", "cross-package"

class HostTopology {
 public:
  // The machine this process runs on (I/O objects kept; NVLink through NVML if present).
  // Throws IoError when hwloc cannot load the machine.
  static HostTopology discover_local();
  // A simulated host from an hwloc XML file. Throws IoError when the file is missing or
  // unreadable and InvalidArgument when hwloc rejects its contents; both name the path.
  static HostTopology load_xml(const std::string& path);

  const std::string& source() const { return source_; }  // "local" or the XML path
  const std::string& hostname() const { return hostname_; }
  int num_packages() const { return num_packages_; }
  int num_numa_nodes() const { return num_numa_nodes_; }
  int num_cores() const { return num_cores_; }
  int num_pus() const { return num_pus_; }
  int num_gpus() const { return static_cast<int>(gpus_.size()); }
  int num_nics() const { return static_cast<int>(nics_.size()); }
  const std::vector<Gpu>& gpus() const { return gpus_; }
  const std::vector<Nic>& nics() const { return nics_; }
  const Gpu& gpu(int index) const;  // throws InvalidArgument when out of range
  const Nic& nic(int index) const;

  // NVLink bandwidth between GPUs a and b in GB/s (0 when not connected or a == b).
  double nvlink_gbps(int a, int b) const;
  bool nvlink(int a, int b) const { return nvlink_gbps(a, b) > 0; }
  // Where the NVLink data came from: "nvml", "xml:NVLinkBandwidth" or "none".
  const std::string& nvlink_source() const { return nvlink_source_; }

  // The PCI relation between GPUs a and b, and between GPU g and NIC n.
  PciePath gpu_gpu_path(int a, int b) const;
  PciePath gpu_nic_path(int g, int n) const;
  // kSameDevice when a == b; kSameNode over NVLink; kSamePcieSwitch when only PCIe joins them
  // through a common switch; kSameNode otherwise (through host memory). Never kNetwork.
  LinkClass gpu_link_class(int a, int b) const;

  // Readable multi-line summary and a JSON document (stable keys; see docs/topology.md).
  std::string summary() const;
  std::string to_json() const;

 private:
  friend class HostBuilder;
  std::string source_;
  std::string hostname_;
  int num_packages_ = 0;
  int num_numa_nodes_ = 0;
  int num_cores_ = 0;
  int num_pus_ = 0;
  std::vector<Gpu> gpus_;
  std::vector<Nic> nics_;
  std::vector<std::vector<double>> nvlink_gbps_;  // [num_gpus][num_gpus]
  std::string nvlink_source_ = "none";
};

}  // namespace switchyard::topology
