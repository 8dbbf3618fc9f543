// NVML through dlopen: only the handful of entry points we need, declared here with the
// types of nvml.h (which CUDA 13 no longer ships in the toolkit), so the library builds and
// runs without a driver.
#include "nvml_links.h"

#include <dlfcn.h>

#include "switchyard/common/log.h"

namespace switchyard::topology {
namespace {

using NvmlReturn = int;  // nvmlReturn_t; NVML_SUCCESS = 0
using NvmlDevice = void*;  // nvmlDevice_t
constexpr NvmlReturn kNvmlSuccess = 0;
constexpr int kP2pCapsIndexNvlink = 2;  // NVML_P2P_CAPS_INDEX_NVLINK
constexpr int kP2pStatusOk = 0;  // NVML_P2P_STATUS_OK
constexpr int kFeatureEnabled = 1;  // NVML_FEATURE_ENABLED
constexpr unsigned kMaxLinks = 18;  // NVML_NVLINK_MAX_LINKS

struct NvmlApi {
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*handle_by_bus_id)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*p2p_status)(NvmlDevice, NvmlDevice, int, int*) = nullptr;
  NvmlReturn (*link_state)(NvmlDevice, unsigned, int*) = nullptr;
};

// dlopen handle owner.
class Library {
 public:
  explicit Library(const char* name) : handle_(dlopen(name, RTLD_NOW | RTLD_LOCAL)) {}
  ~Library() {
    if (handle_) dlclose(handle_);
  }
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;
  template <class F>
  bool bind(F& fn, const char* symbol) {
    fn = reinterpret_cast<F>(dlsym(handle_, symbol));
    return fn != nullptr;
  }
  explicit operator bool() const { return handle_ != nullptr; }

 private:
  void* handle_;
};

}  // namespace

std::optional<std::vector<std::vector<double>>> nvml_nvlink_matrix(const std::vector<std::string>& bus_ids,
                                                                   const char* library) {
  if (bus_ids.empty()) return std::nullopt;
  Library lib(library);
  if (!lib) {
    SY_DEBUG("topo", "nvml: " << library << " not found; NVLink from NVML unavailable");
    return std::nullopt;
  }
  NvmlApi api;
  if (!lib.bind(api.init, "nvmlInit_v2") || !lib.bind(api.shutdown, "nvmlShutdown") ||
      !lib.bind(api.handle_by_bus_id, "nvmlDeviceGetHandleByPciBusId_v2") ||
      !lib.bind(api.p2p_status, "nvmlDeviceGetP2PStatus") || !lib.bind(api.link_state, "nvmlDeviceGetNvLinkState")) {
    SY_WARN("topo", "nvml: " << library << " lacks an expected symbol; NVLink from NVML unavailable");
    return std::nullopt;
  }
  if (api.init() != kNvmlSuccess) {
    SY_WARN("topo", "nvml: nvmlInit failed; NVLink from NVML unavailable");
    return std::nullopt;
  }
  std::optional<std::vector<std::vector<double>>> result;
  std::vector<NvmlDevice> devs(bus_ids.size(), nullptr);
  bool all_found = true;
  for (size_t i = 0; i < bus_ids.size(); ++i) {
    if (api.handle_by_bus_id(bus_ids[i].c_str(), &devs[i]) != kNvmlSuccess) {
      SY_WARN("topo", "nvml: no device with bus id " << bus_ids[i]);
      all_found = false;
    }
  }
  if (all_found) {
    size_t n = bus_ids.size();
    std::vector<int> active(n, 0);
    for (size_t i = 0; i < n; ++i)
      for (unsigned l = 0; l < kMaxLinks; ++l) {
        int state = 0;
        if (api.link_state(devs[i], l, &state) == kNvmlSuccess && state == kFeatureEnabled) ++active[i];
      }
    result.emplace(n, std::vector<double>(n, 0.0));
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j) {
        int status = -1;
        if (i != j && api.p2p_status(devs[i], devs[j], kP2pCapsIndexNvlink, &status) == kNvmlSuccess &&
            status == kP2pStatusOk)
          (*result)[i][j] = active[i] * kNvlinkLinkGbps;
      }
  }
  api.shutdown();
  return result;
}

}  // namespace switchyard::topology
