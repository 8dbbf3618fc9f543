// Helpers on PCI paths (lists of bridges, outermost first). Private to the topology library.
#pragma once

#include <vector>

#include "switchyard/topology/host_topology.h"

namespace switchyard::topology {

// Number of bridges two paths share from the top: 0 means different host bridges.
inline int common_prefix(const std::vector<PciBridge>& a, const std::vector<PciBridge>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n].id == b[n].id) ++n;
  return static_cast<int>(n);
}

// True when the shared part of two paths holds a bridge that is not a host bridge, i.e. the
// devices meet below the CPU, inside a PCIe switch.
inline bool share_switch(const std::vector<PciBridge>& a, const std::vector<PciBridge>& b) {
  int n = common_prefix(a, b);
  for (int i = 0; i < n; ++i)
    if (!a[i].host_bridge) return true;
  return false;
}

}  // namespace switchyard::topology
