// NcclCommunicator and IpcPeerMemory in a build without CUDA or without NCCL: available()
// says so and every constructor throws Unsupported naming what is missing.
#include "switchyard/comm/cuda_ipc.h"
#include "switchyard/comm/nccl_communicator.h"
#include "switchyard/common/error.h"

namespace switchyard::comm {

namespace {
[[noreturn]] void missing(const char* what) {
  SY_THROW(Unsupported, what << ": this build has no CUDA/NCCL backend; hint: configure with -DSY_CUDA=ON where the "
                                "CUDA toolkit and NCCL are installed");
}
}  // namespace

bool NcclCommunicator::available() { return false; }
int NcclCommunicator::runtime_version() { return 0; }
int NcclCommunicator::build_version() { return 0; }
std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Store&, int, int, const NcclOptions&) {
  missing("NcclCommunicator::create");
}
std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator&, const NcclOptions&) {
  missing("NcclCommunicator::create");
}

#ifndef SY_WITH_CUDA
std::unique_ptr<IpcPeerMemory> IpcPeerMemory::exchange(Store&, const std::string&, int, const std::vector<int>&,
                                                       const cuda::DeviceBuffer&, std::chrono::milliseconds) {
  missing("IpcPeerMemory::exchange");
}
std::unique_ptr<IpcPeerMemory> IpcPeerMemory::exchange(Communicator&, const cuda::DeviceBuffer&) {
  missing("IpcPeerMemory::exchange");
}
IpcPeerMemory::~IpcPeerMemory() = default;
void* IpcPeerMemory::peer(int) const { missing("IpcPeerMemory::peer"); }
size_t IpcPeerMemory::peer_bytes(int) const { missing("IpcPeerMemory::peer_bytes"); }
#endif

}  // namespace switchyard::comm
