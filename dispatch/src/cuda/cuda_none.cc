// dispatch's GPU entry points in a build without CUDA: each throws Unsupported naming itself.
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/gpu_perf.h"
#include "switchyard/dispatch/cuda/intranode.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/dispatch/cuda/low_latency.h"

namespace switchyard::dispatch::gpu {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  SY_THROW(Unsupported, what << ": this build has no CUDA backend; hint: configure with -DSY_CUDA=ON");
}
}  // namespace

void quantize_fp8_tiles(const float*, int64_t, int64_t, bool, uint8_t*, float*, cuda::StreamHandle) {
  no_cuda("gpu::quantize_fp8_tiles");
}
void quantize_fp8_tiles(const uint16_t*, int64_t, int64_t, bool, uint8_t*, float*, cuda::StreamHandle) {
  no_cuda("gpu::quantize_fp8_tiles");
}
void launch_dispatch_layout(const int64_t*, int64_t, int, int, int, const int32_t*, int, const DeviceLayoutOutputs&,
                            cuda::StreamHandle) {
  no_cuda("gpu::launch_dispatch_layout");
}
DispatchLayout get_dispatch_layout(const int64_t*, int64_t, int, int, const topology::RankMap&, cuda::StreamHandle) {
  no_cuda("gpu::get_dispatch_layout");
}

struct IntranodeBuffer::State {};
int64_t IntranodeHandle::num_tokens() const { return 0; }
int64_t IntranodeHandle::num_recv_tokens() const { return 0; }
IntranodeBuffer::IntranodeBuffer(std::shared_ptr<comm::Communicator>, const IntranodeOptions&) {
  no_cuda("gpu::IntranodeBuffer");
}
IntranodeBuffer::~IntranodeBuffer() = default;
int IntranodeBuffer::rank() const { return 0; }
int IntranodeBuffer::num_ranks() const { return 0; }
int IntranodeBuffer::num_local_experts() const { return 0; }
double IntranodeBuffer::last_kernel_us() const { return 0; }
DeviceDispatchResult IntranodeBuffer::dispatch(const DeviceDispatchArgs&) { no_cuda("gpu::IntranodeBuffer::dispatch"); }
DeviceCombineResult IntranodeBuffer::combine(const DeviceCombineArgs&) { no_cuda("gpu::IntranodeBuffer::combine"); }
void IntranodeBuffer::dispatch(const DeviceDispatchArgs&, DeviceDispatchResult&) {
  no_cuda("gpu::IntranodeBuffer::dispatch");
}
void IntranodeBuffer::combine(const DeviceCombineArgs&, DeviceCombineResult&) { no_cuda("gpu::IntranodeBuffer::combine"); }
int IntranodeBuffer::num_sms() const { return 0; }
double IntranodeBuffer::last_layout_us() const { return 0; }

void copy_device_to_host(void*, const void*, size_t) { no_cuda("gpu::copy_device_to_host"); }
struct LowLatencyBuffer::State {};
LowLatencyBuffer::LowLatencyBuffer(std::shared_ptr<comm::Communicator>, const LowLatencyOptions&) {
  no_cuda("gpu::LowLatencyBuffer");
}
LowLatencyBuffer::~LowLatencyBuffer() = default;
int LowLatencyBuffer::num_local_experts() const { return 0; }
DeviceLowLatencyView LowLatencyBuffer::dispatch(const DeviceLowLatencyArgs&) {
  no_cuda("gpu::LowLatencyBuffer::dispatch");
}
const uint16_t* LowLatencyBuffer::combine(const uint16_t*, cuda::StreamHandle, int) {
  no_cuda("gpu::LowLatencyBuffer::combine");
}

}  // namespace switchyard::dispatch::gpu

namespace switchyard::dispatch::gpu {
GpuPerfReport run_gpu_perf(const GpuPerfOptions&) { no_cuda("gpu::run_gpu_perf"); }
}  // namespace switchyard::dispatch::gpu
