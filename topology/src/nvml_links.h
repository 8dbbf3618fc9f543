// NVLink connectivity from NVML, loaded at run time with dlopen("libnvidia-ml.so.1").
//
// Debian's hwloc has no NVML plugin, so on a real GPU host this is the only NVLink source.
// Where no driver is installed the library is absent and the query returns nothing; it never
// throws. Not thread-safe (nvmlInit/Shutdown are process-wide); called once per discovery.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace switchyard::topology {

// For GPUs given by PCI bus id ("0000:19:00.0"), the NVLink bandwidth matrix in GB/s:
// [i][j] = active NVLinks of GPU i times kNvlinkLinkGbps when NVML reports an NVLink P2P path
// between i and j, else 0. nullopt when NVML is unavailable or does not know these GPUs.
// `library` is the file dlopen loads (tests pass a fake NVML).
inline constexpr const char* kNvmlLibrary = "libnvidia-ml.so.1";
std::optional<std::vector<std::vector<double>>> nvml_nvlink_matrix(const std::vector<std::string>& bus_ids,
                                                                   const char* library = kNvmlLibrary);

// Per-direction bandwidth of one NVLink 4 link (H100: 18 links, 450 GB/s each way).
inline constexpr double kNvlinkLinkGbps = 25.0;

}  // namespace switchyard::topology
