// HwlocTopology: RAII owner of an hwloc_topology_t loaded with every I/O object kept.
//
// Private to the topology library. Loading is the only hwloc call that can fail; it throws
// with the source named. Not thread-safe: one thread discovers, then the handle is dropped.
#pragma once

#include <hwloc.h>

#include <string>

namespace switchyard::topology {

class HwlocTopology {
 public:
  // The running machine. Throws IoError when hwloc fails.
  static HwlocTopology load_local();
  // An hwloc XML file. Throws IoError when the file cannot be read, InvalidArgument when
  // hwloc rejects it.
  static HwlocTopology load_xml(const std::string& path);

  HwlocTopology(HwlocTopology&& other) noexcept : topo_(other.topo_) { other.topo_ = nullptr; }
  HwlocTopology& operator=(HwlocTopology&&) = delete;
  HwlocTopology(const HwlocTopology&) = delete;
  ~HwlocTopology();

  hwloc_topology_t get() const { return topo_; }

 private:
  HwlocTopology();
  hwloc_topology_t topo_ = nullptr;
};

}  // namespace switchyard::topology
