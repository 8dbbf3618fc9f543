// A fake NVML (the five entry points nvml_links.cc uses) for testing the dlopen path without
// a driver. Four GPUs at buses 0x12, 0x1a, 0x92, 0x9a; GPU i has i + 1 active NVLinks; NVLink
// P2P between GPUs 0-1 and 2-3 only. Bus ids are matched the way NVML does, case-insensitively
// on "domain:bus:dev.fn" with a 4- or 8-digit domain.
#include <strings.h>

#include <cstdint>
#include <cstring>

namespace {

const char* kBusIds[] = {"0000:12:00.0", "0000:1a:00.0", "0000:92:00.0", "0000:9a:00.0"};
constexpr int kNumGpus = 4;
int g_init = 0;

int index_of(void* dev) {
  return static_cast<int>(reinterpret_cast<intptr_t>(dev)) - 1;
}

}  // namespace

extern "C" {

int nvmlInit_v2() {
  ++g_init;
  return 0;
}

int nvmlShutdown() {
  return g_init-- > 0 ? 0 : 1;
}

int nvmlDeviceGetHandleByPciBusId_v2(const char* bus_id, void** dev) {
  const char* id = bus_id;
  if (std::strlen(id) == 16 && std::strncmp(id, "0000", 4) == 0) id += 4;  // 8-digit domain
  for (int i = 0; i < kNumGpus; ++i)
    if (strcasecmp(id, kBusIds[i]) == 0) {
      *dev = reinterpret_cast<void*>(static_cast<intptr_t>(i + 1));
      return 0;
    }
  return 6;  // NVML_ERROR_NOT_FOUND
}

int nvmlDeviceGetP2PStatus(void* a, void* b, int caps_index, int* status) {
  if (caps_index != 2) return 2;  // only NVML_P2P_CAPS_INDEX_NVLINK is modelled
  *status = index_of(a) / 2 == index_of(b) / 2 ? 0 : 5;  // OK or NOT_SUPPORTED
  return 0;
}

int nvmlDeviceGetNvLinkState(void* dev, unsigned link, int* active) {
  if (link >= 18) return 2;
  *active = static_cast<int>(link) <= index_of(dev) ? 1 : 0;
  return 0;
}

}  // extern "C"
