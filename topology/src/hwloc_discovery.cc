// Discovery: walk a loaded hwloc topology and fill a HostTopology (packages, NUMA nodes, cores,
// GPUs, NICs, PCI paths, NVLink), then pick each GPU's nearest NIC.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <tuple>

#include "hwloc_topology.h"
#include "nvml_links.h"
#include "pci_path.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/common/param.h"
#include "switchyard/topology/host_topology.h"

namespace switchyard::topology {

namespace {

const Param<bool> kTopoNvml("TOPO_NVML", true, "",
                            "read NVLink through NVML (dlopen libnvidia-ml.so.1) when discovering this machine");

constexpr unsigned kVendorNvidia = 0x10de;
constexpr unsigned kClass3dController = 0x0302;
constexpr unsigned kClassVgaController = 0x0300;

bool is_nvidia_gpu(hwloc_obj_t pci) {
  const auto& a = pci->attr->pcidev;
  return a.vendor_id == kVendorNvidia && (a.class_id == kClass3dController || a.class_id == kClassVgaController);
}

PciAddress pci_address(hwloc_obj_t pci) {
  const auto& a = pci->attr->pcidev;
  return {static_cast<int>(a.domain), a.bus, a.dev, a.func};
}

const char* info(hwloc_obj_t o, const char* name) {
  const char* v = hwloc_obj_get_info_by_name(o, name);
  return v ? v : "";
}

// The PCI device an OS device hangs off, or nullptr.
hwloc_obj_t pci_parent(hwloc_obj_t o) {
  for (hwloc_obj_t p = o->parent; p; p = p->parent)
    if (p->type == HWLOC_OBJ_PCI_DEVICE)
      return p;
    else if (p->type != HWLOC_OBJ_OS_DEVICE)
      return nullptr;
  return nullptr;
}

}  // namespace

// Fills the private fields of HostTopology (a friend) from an hwloc topology.
class HostBuilder {
 public:
  HostBuilder(const HwlocTopology& topo, HostTopology& host) : t_(topo.get()), host_(host) {}

  void build(bool local) {
    host_.num_packages_ = std::max(1, hwloc_get_nbobjs_by_type(t_, HWLOC_OBJ_PACKAGE));
    host_.num_numa_nodes_ = hwloc_get_nbobjs_by_type(t_, HWLOC_OBJ_NUMANODE);
    host_.num_cores_ = hwloc_get_nbobjs_by_type(t_, HWLOC_OBJ_CORE);
    host_.num_pus_ = hwloc_get_nbobjs_by_type(t_, HWLOC_OBJ_PU);
    find_gpus();
    find_nics();
    for (auto& g : host_.gpus_) g.nic = nearest_nic(g);
    size_t n = host_.gpus_.size();
    host_.nvlink_gbps_.assign(n, std::vector<double>(n, 0.0));
    if (!read_xml_nvlink() && local && kTopoNvml.get()) read_nvml_nvlink();
  }

 private:
  // Package and NUMA node of an I/O object from its first non-I/O ancestor.
  void locate(hwloc_obj_t io, int& package, int& numa) {
    hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t_, io);
    package = numa = -1;
    if (!anc) return;
    hwloc_obj_t pkg = anc->type == HWLOC_OBJ_PACKAGE ? anc : hwloc_get_ancestor_obj_by_type(t_, HWLOC_OBJ_PACKAGE, anc);
    if (!pkg && anc->cpuset)
      pkg = hwloc_get_next_obj_covering_cpuset_by_type(t_, anc->cpuset, HWLOC_OBJ_PACKAGE, nullptr);
    if (pkg) package = static_cast<int>(pkg->logical_index);
    if (anc->nodeset && hwloc_bitmap_weight(anc->nodeset) == 1) {
      hwloc_obj_t node =
          hwloc_get_numanode_obj_by_os_index(t_, static_cast<unsigned>(hwloc_bitmap_first(anc->nodeset)));
      if (node) numa = static_cast<int>(node->logical_index);
    }
  }

  // Bridges above a PCI device, outermost first; also the id of the outermost non-host bridge.
  std::vector<PciBridge> pci_path(hwloc_obj_t pci, int& switch_id) {
    std::vector<PciBridge> path;
    switch_id = -1;
    for (hwloc_obj_t p = pci->parent; p && p->type == HWLOC_OBJ_BRIDGE; p = p->parent) {
      PciBridge b;
      const auto& a = p->attr->bridge;
      b.host_bridge = a.upstream_type == HWLOC_OBJ_BRIDGE_HOST;
      if (!b.host_bridge)
        b.address = {static_cast<int>(a.upstream.pci.domain), a.upstream.pci.bus, a.upstream.pci.dev,
                     a.upstream.pci.func};
      b.depth = static_cast<int>(a.depth);
      b.id = bridge_id(p);
      if (!b.host_bridge) switch_id = b.id;
      path.push_back(b);
    }
    std::reverse(path.begin(), path.end());
    return path;
  }

  int bridge_id(hwloc_obj_t bridge) {
    auto [it, inserted] = bridge_ids_.emplace(bridge->gp_index, static_cast<int>(bridge_ids_.size()));
    return it->second;
  }

  void find_gpus() {
    for (hwloc_obj_t pci = hwloc_get_next_pcidev(t_, nullptr); pci; pci = hwloc_get_next_pcidev(t_, pci)) {
      if (!is_nvidia_gpu(pci)) continue;
      Gpu g;
      g.pci = pci_address(pci);
      // Prefer a CUDA OS device name, then NVML, then any GPU/co-processor OS device.
      std::string cuda, nvml, other, model;
      for (hwloc_obj_t c = pci->io_first_child; c; c = c->next_sibling) {
        if (c->type != HWLOC_OBJ_OS_DEVICE) continue;
        std::string sub = c->subtype ? c->subtype : "";
        if (sub == "CUDA")
          cuda = c->name;
        else if (sub == "NVML")
          nvml = c->name;
        else if (other.empty() && c->name)
          other = c->name;
        if (model.empty()) model = info(c, "GPUModel");
      }
      g.name = !cuda.empty() ? cuda : !nvml.empty() ? nvml : other;
      if (model.empty()) model = info(pci, "PCIDevice");
      if (model.empty()) {
        char buf[32];
        snprintf(buf, sizeof buf, "NVIDIA [10de:%04x]", pci->attr->pcidev.device_id);
        model = buf;
      }
      g.model = model;
      locate(pci, g.package, g.numa);
      g.pci_path = pci_path(pci, g.switch_id);
      gpu_objs_.push_back(pci);
      host_.gpus_.push_back(std::move(g));
    }
    sort_by_pci(host_.gpus_, gpu_objs_);
    for (int i = 0; i < static_cast<int>(host_.gpus_.size()); ++i) {
      host_.gpus_[i].index = i;
      if (host_.gpus_[i].name.empty()) host_.gpus_[i].name = "gpu" + std::to_string(i);
    }
  }

  void find_nics() {
    // One NIC per PCI device (or per OS device without one): an OpenFabrics OS device makes it
    // InfiniBand; otherwise its network interface makes it Ethernet.
    std::map<hwloc_obj_t, Nic> by_pci;
    std::vector<Nic> no_pci;
    for (hwloc_obj_t o = hwloc_get_next_osdev(t_, nullptr); o; o = hwloc_get_next_osdev(t_, o)) {
      auto type = o->attr->osdev.type;
      if (type != HWLOC_OBJ_OSDEV_OPENFABRICS && type != HWLOC_OBJ_OSDEV_NETWORK) continue;
      hwloc_obj_t pci = pci_parent(o);
      if (!pci) continue;  // virtual interfaces have no locality worth reporting
      Nic& nic = by_pci[pci];
      if (type == HWLOC_OBJ_OSDEV_OPENFABRICS) {
        nic.kind = NicKind::kInfiniBand;
        nic.name = o->name;
      } else {
        nic.netdev = o->name;
        if (nic.kind != NicKind::kInfiniBand && nic.name.empty()) nic.name = o->name;
      }
    }
    std::vector<hwloc_obj_t> objs;
    for (auto& [pci, nic] : by_pci) {
      nic.pci = pci_address(pci);
      nic.has_pci = true;
      locate(pci, nic.package, nic.numa);
      nic.pci_path = pci_path(pci, nic.switch_id);
      objs.push_back(pci);
      host_.nics_.push_back(nic);
    }
    sort_by_pci(host_.nics_, objs);
    for (int i = 0; i < static_cast<int>(host_.nics_.size()); ++i) host_.nics_[i].index = i;
  }

  template <class T>
  static void sort_by_pci(std::vector<T>& items, std::vector<hwloc_obj_t>& objs) {
    std::vector<size_t> order(items.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    auto key = [&](size_t i) {
      const auto& p = items[i].pci;
      return std::make_tuple(p.domain, p.bus, p.dev, p.func);
    };
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
    std::vector<T> sorted;
    std::vector<hwloc_obj_t> sorted_objs;
    for (size_t i : order) {
      sorted.push_back(std::move(items[i]));
      sorted_objs.push_back(objs[i]);
    }
    items = std::move(sorted);
    objs = std::move(sorted_objs);
  }

  // Deepest common PCI ancestor first, then the same NUMA node, then the lower NIC index.
  int nearest_nic(const Gpu& g) const {
    int best = -1;
    std::tuple<int, int> best_key{-1, -1};
    for (const auto& n : host_.nics_) {
      std::tuple<int, int> key{common_prefix(g.pci_path, n.pci_path), g.numa >= 0 && g.numa == n.numa};
      if (key > best_key) {
        best_key = key;
        best = n.index;
      }
    }
    return best;
  }

  bool read_xml_nvlink() {
    unsigned nr = 1;
    hwloc_distances_s* dist = nullptr;
    if (hwloc_distances_get_by_name(t_, "NVLinkBandwidth", &nr, &dist, 0) != 0 || nr == 0) return false;
    // Matrix objects may be the GPUs' OS devices (cuda0, nvml0) or their PCI devices.
    std::vector<int> gpu_of(dist->nbobjs, -1);
    for (unsigned i = 0; i < dist->nbobjs; ++i) {
      hwloc_obj_t o = dist->objs[i];
      hwloc_obj_t pci = o->type == HWLOC_OBJ_PCI_DEVICE ? o : pci_parent(o);
      for (size_t g = 0; g < gpu_objs_.size(); ++g)
        if (gpu_objs_[g] == pci) gpu_of[i] = static_cast<int>(g);
      if (gpu_of[i] < 0)
        SY_WARN("topo", "NVLinkBandwidth: object " << (o->name ? o->name : "?") << " is not a GPU; ignored");
    }
    for (unsigned i = 0; i < dist->nbobjs; ++i)
      for (unsigned j = 0; j < dist->nbobjs; ++j)
        if (gpu_of[i] >= 0 && gpu_of[j] >= 0 && gpu_of[i] != gpu_of[j])
          host_.nvlink_gbps_[gpu_of[i]][gpu_of[j]] = static_cast<double>(dist->values[i * dist->nbobjs + j]);
    hwloc_distances_release(t_, dist);
    host_.nvlink_source_ = "xml:NVLinkBandwidth";
    return true;
  }

  void read_nvml_nvlink() {
    std::vector<std::string> ids;
    for (const auto& g : host_.gpus_) ids.push_back(g.pci.str());
    auto m = nvml_nvlink_matrix(ids);
    if (!m) return;
    host_.nvlink_gbps_ = std::move(*m);
    host_.nvlink_source_ = "nvml";
  }

  hwloc_topology_t t_;
  HostTopology& host_;
  std::map<uint64_t, int> bridge_ids_;
  std::vector<hwloc_obj_t> gpu_objs_;
};

HostTopology HostTopology::discover_local() {
  HwlocTopology topo = HwlocTopology::load_local();
  HostTopology host;
  host.source_ = "local";
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  host.hostname_ = name;
  HostBuilder(topo, host).build(/*local=*/true);
  SY_DEBUG("topo",
           "local host " << host.hostname_ << ": " << host.num_gpus() << " gpus, " << host.num_nics() << " nics");
  return host;
}

HostTopology HostTopology::load_xml(const std::string& path) {
  HwlocTopology topo = HwlocTopology::load_xml(path);
  HostTopology host;
  host.source_ = path;
  const char* hn = hwloc_obj_get_info_by_name(hwloc_get_root_obj(topo.get()), "HostName");
  host.hostname_ = hn ? hn : std::filesystem::path(path).stem().string();
  HostBuilder(topo, host).build(/*local=*/false);
  return host;
}

}  // namespace switchyard::topology
