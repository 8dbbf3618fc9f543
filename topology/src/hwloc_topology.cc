// HwlocTopology: hwloc set-up with the I/O filter at KEEP_ALL (PCI bridges, PCI devices and OS
// devices are dropped by default, even from XML).
#include "hwloc_topology.h"

#include <cerrno>
#include <fstream>
#include <iterator>

#include "switchyard/common/error.h"

namespace switchyard::topology {

HwlocTopology::HwlocTopology() {
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
