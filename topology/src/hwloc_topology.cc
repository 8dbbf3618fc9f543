// HwlocTopology: hwloc set-up with the I/O filter at KEEP_ALL (PCI bridges, PCI devices and OS
// devices are dropped by default, even from XML).
#include "hwloc_topology.h"

#include <cerrno>
#include <fstream>
#include <iterator>

#include "switchyard/common/error.h"

namespace switchyard::topology {

namespace {

// hwloc unloads its plugins (hwloc_pci.so with libpciaccess, ...) when the last topology is
// destroyed. Memory those libraries keep in their globals then looks leaked to LeakSanitizer,
// and every discovery pays for reloading them. One empty topology, created once and never
// destroyed, keeps the plugins loaded for the life of the process. Thread-safe (static init).
void keep_hwloc_plugins_loaded() {
  // volatile: the compiler must keep the pointer in memory, where LeakSanitizer sees it.
  static hwloc_topology_t volatile resident = [] {
    hwloc_topology_t t = nullptr;
    return hwloc_topology_init(&t) == 0 ? t : nullptr;
  }();
  (void)resident;
}

}  // namespace

HwlocTopology::HwlocTopology() {
  keep_hwloc_plugins_loaded();
  if (hwloc_topology_init(&topo_) != 0) SY_THROW(IoError, "hwloc: topology init failed: " << errno_text(errno));
  hwloc_topology_set_io_types_filter(topo_, HWLOC_TYPE_FILTER_KEEP_ALL);
}

HwlocTopology::~HwlocTopology() {
  if (topo_) hwloc_topology_destroy(topo_);
}

HwlocTopology HwlocTopology::load_local() {
  HwlocTopology t;
  if (hwloc_topology_load(t.topo_) != 0)
    SY_THROW(IoError, "hwloc: cannot discover this machine: " << errno_text(errno));
  return t;
}

HwlocTopology HwlocTopology::load_xml(const std::string& path) {
  // Read the file ourselves first so a missing file is an IoError naming the path, and hand
  // hwloc a buffer (its own file errors are vague).
  std::ifstream in(path, std::ios::binary);
  if (!in) SY_THROW(IoError, "topology XML '" << path << "': cannot open: " << errno_text(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  SY_REQUIRE(!text.empty(), "topology XML '" << path << "': file is empty");
  SY_REQUIRE(text.find("<topology") != std::string::npos,
             "topology XML '" << path << "': not an hwloc XML file (no <topology> element)");
  HwlocTopology t;
  // hwloc parses the buffer in set_xmlbuffer and builds the tree in load; either can refuse it.
  // The length counts the terminating NUL.
  if (hwloc_topology_set_xmlbuffer(t.topo_, text.c_str(), static_cast<int>(text.size() + 1)) != 0 ||
      hwloc_topology_load(t.topo_) != 0)
    SY_THROW(InvalidArgument, "topology XML '" << path << "': hwloc rejected it (malformed or not hwloc 2.x XML: "
                                               << errno_text(errno) << "; hwloc's own message is on stderr)");
  return t;
}

}  // namespace switchyard::topology
